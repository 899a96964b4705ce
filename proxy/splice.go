package proxy

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

// bufPool holds the copy buffers. A buffer is taken only while bytes are
// moving, never while a session waits for its client, so an idle session
// costs two goroutines and its sockets' kernel buffers, not a user-space
// buffer.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// splice connects the logged-in downstream and upstream connections. Bytes
// either reader had already buffered (a client may pipeline commands right
// after LOGIN) are flushed first; then relayd copies without looking at the
// data. It returns when either side closes.
func (c *imapSession) splice(l *upstreamLogin, downBuf *bufio.Reader) {
	up := l.up
	c.closeMu.Lock()
	c.up = up.conn
	c.closeMu.Unlock()
	c.spliced.Store(true)
	l.acct.imapSessions.Add(1)
	defer l.acct.imapSessions.Add(-1)
	up.conn.SetDeadline(time.Time{})
	c.down.SetDeadline(time.Time{})

	if err := flush(up.conn, downBuf); err != nil {
		return
	}
	if err := flush(c.down, up.br); err != nil {
		return
	}
	up.br = nil // the pre-auth buffers are not needed any more

	done := make(chan struct{})
	go func() {
		defer close(done)
		copyBulk(c.down, up.conn)
		c.close()
	}()
	err := copyIdle(up.conn, c.down, c.srv.opts.IdleTimeout)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		c.log.Info("closing IMAP session: the client sent nothing", "idle", c.srv.opts.IdleTimeout)
	}
	c.close()
	<-done
	c.log.Debug("IMAP session ended")
}

func flush(dst io.Writer, br *bufio.Reader) error {
	n := br.Buffered()
	if n == 0 {
		return nil
	}
	b, _ := br.Peek(n)
	_, err := dst.Write(b)
	return err
}

// copyBulk copies upstream to downstream: the direction of FETCH data.
// Between two TCP sockets io.Copy uses splice(2) and no user-space buffer.
func copyBulk(dst, src net.Conn) error {
	if _, ok := src.(*net.TCPConn); ok {
		if _, ok := dst.(*net.TCPConn); ok {
			_, err := io.Copy(dst, src)
			return err
		}
	}
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	_, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, *bp)
	return err
}

// copyIdle copies downstream to upstream, ending with
// os.ErrDeadlineExceeded when the client sends nothing for idle. On a TCP
// socket it waits for readability before taking a buffer from the pool.
func copyIdle(dst, src net.Conn, idle time.Duration) error {
	var rc syscall.RawConn
	if tc, ok := src.(*net.TCPConn); ok {
		rc, _ = tc.SyscallConn()
	}
	var peek [1]byte
	ready := func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	}
	for {
		src.SetReadDeadline(time.Now().Add(idle))
		if rc != nil {
			if err := rc.Read(ready); err != nil {
				return err
			}
		}
		bp := bufPool.Get().(*[]byte)
		n, err := src.Read(*bp)
		if n > 0 {
			if _, werr := dst.Write((*bp)[:n]); werr != nil {
				bufPool.Put(bp)
				return werr
			}
		}
		bufPool.Put(bp)
		if err != nil {
			return err
		}
	}
}
