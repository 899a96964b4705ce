package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
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
// after LOGIN) are flushed first; then relayd copies, following no more
// than where the upstream's lines and literals end (clientStream). The
// session ends (c.ended) when either side closes; splice may return
// before, once its directions parked.
func (c *imapSession) splice(l *upstreamLogin, downBuf *bufio.Reader) {
	// Neither l nor up is kept: an idle session holds only what it needs.
	up, acct := l.up, l.acct
	// The account's place is given back before the session's end is
	// told (c.end), so that whoever hears of the end may log in again.
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(acct.ReleaseIMAP) }
	handedOff := false
	defer func() {
		if !handedOff {
			release()
			c.ended(recover())
		}
	}()
	c.setUp(up.conn)
	cs := newClientStream()
	p := &splice{proto: "IMAP", conns: &c.conns, down: c.down, up: up.conn, downBuf: downBuf, upBuf: up.br, cs: cs,
		idle: c.srv.opts.IdleTimeout, wt: c.srv.opts.WriteTimeout, log: c.log, health: c.health,
		started: func() { c.stream.Store(cs) },
		end: func(outcome string) {
			if outcome != "" {
				c.outcome = outcome
			}
			release()
			c.end()
		},
		finally: func() {
			release()
			c.ended(nil)
		}}
	handedOff = true
	p.run()
}

// buffered returns the bytes br holds, without consuming them.
func buffered(br *bufio.Reader) []byte {
	b, _ := br.Peek(br.Buffered())
	return b
}

// errStalled ends a copy whose destination took nothing written to it
// for the write timeout: a stalled peer must not pin a session forever.
var errStalled = errors.New("the peer took nothing written to it for the write timeout")

// writeWithin writes b to dst, failing with errStalled when dst takes
// nothing for wt. The deadline is this write's alone: crypto/tls writes
// from the reading side too (the reply a TLS 1.3 KeyUpdate asks for), and
// a deadline left behind, long past, would fail that write, after which
// crypto/tls fails every write and, not having moved to the peer's next
// key, every read (bad record MAC).
func writeWithin(dst net.Conn, b []byte, wt time.Duration) error {
	dst.SetWriteDeadline(time.Now().Add(wt))
	_, err := dst.Write(b)
	dst.SetWriteDeadline(time.Time{})
	return stalled(err)
}

// stalled turns a write deadline's error into errStalled.
func stalled(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return errStalled
	}
	return err
}

// copyBulk copies upstream to downstream: the direction of FETCH data.
// Every write goes through cs, which follows where lines and literals end.
// Between two TCP sockets it splices the literals' octets (spliceTCP),
// with no user-space buffer. A write that makes no progress for wt ends it
// with errStalled. It waits for src at w.
func copyBulk(dst, src net.Conn, wt time.Duration, cs *clientStream, w *dirWait) error {
	if s, ok := src.(*net.TCPConn); ok {
		if d, ok := dst.(*net.TCPConn); ok {
			return spliceTCP(d, s, wt, cs, w)
		}
	}
	return copyCoalesce(dst, src, wt, cs, w)
}

// coalescePool holds the buffers copyCoalesce gathers records in.
var coalescePool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// copyCoalesce copies from a TLS upstream. A TLS Read yields at most one
// record (16 KiB), and writing each record on its own wakes the client once
// per record, which costs more CPU than the copy. So after a read it
// gathers what is already available, without blocking (gather), and
// writes it at once. Writes go through cs.
//
// Once a gather ran into the end of what the socket had, crypto/tls holds
// no complete record (at most part of one, whose rest is still to come),
// so the copy waits for the TCP socket under it to become readable,
// holding no buffer, at w, where it may park. A buffer is taken from the
// pool when bytes arrive.
func copyCoalesce(dst, src net.Conn, wt time.Duration, cs *clientStream, w *dirWait) error {
	rc := rawUnder(src)
	if rc == nil {
		return copyCoalesceBlocking(dst, src, wt, cs, w)
	}
	// A handshake cannot run against a deadline in the past: finish it
	// first (a logged-in upstream's is long done).
	if err := src.(*tls.Conn).Handshake(); err != nil {
		return err
	}
	// drained: the last gather ran into the end of what there was.
	drained := false
	for {
		if drained {
			if err := w.wait(src, rc); err != nil {
				return err
			}
		}
		bp := coalescePool.Get().(*[]byte)
		k := 0
		var err, werr error
		if drained {
			// Bytes came: a read returns at least one record's.
			k, err = src.Read(*bp)
		}
		if err == nil {
			k, drained, err = gather(src, *bp, k)
		}
		if k > 0 {
			werr = cs.write(dst, (*bp)[:k], wt)
		}
		coalescePool.Put(bp)
		if werr != nil {
			return werr
		}
		if err != nil {
			return err
		}
	}
}

// gather reads what src has available into buf[k:] without blocking. It
// returns how much buf holds, and drained when src had no more (rather
// than buf being full).
func gather(src net.Conn, buf []byte, k int) (n int, drained bool, err error) {
	if tc, ok := src.(*tls.Conn); ok {
		if gc, ok := tc.NetConn().(*gatherConn); ok {
			// What the socket holds too, not only what crypto/tls
			// has read: larger writes, fewer wake-ups of the client.
			gc.nonblocking = true
			defer func() { gc.nonblocking = false }()
			return gatherFrom(src, buf, k)
		}
	}
	src.SetReadDeadline(longAgo)
	defer src.SetReadDeadline(time.Time{})
	return gatherFrom(src, buf, k)
}

// gatherFrom reads src into buf[k:] until buf is full or a read fails;
// os.ErrDeadlineExceeded means src had no more for now (drained).
func gatherFrom(src net.Conn, buf []byte, k int) (n int, drained bool, err error) {
	for k < len(buf) {
		m, rerr := src.Read(buf[k:])
		k += m
		if rerr != nil {
			if errors.Is(rerr, os.ErrDeadlineExceeded) {
				return k, true, nil
			}
			return k, false, rerr
		}
	}
	return k, false, nil
}

// rawUnder returns the socket under a TLS connection, for waiting until it
// is readable; nil if there is none.
func rawUnder(c net.Conn) syscall.RawConn {
	tc, ok := c.(*tls.Conn)
	if !ok {
		return nil
	}
	sc, ok := tc.NetConn().(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}

// copyCoalesceBlocking is copyCoalesce for a source that is not a TLS
// connection over a socket: a plaintext upstream copied to a TLS client,
// which waits at w (it holds nothing in user space, so it may park), or a
// test's pipe, which blocks in a read of a small buffer.
func copyCoalesceBlocking(dst, src net.Conn, wt time.Duration, cs *clientStream, w *dirWait) error {
	var rc syscall.RawConn
	if tc, ok := src.(*net.TCPConn); ok {
		rc, _ = tc.SyscallConn()
	}
	var first [2048]byte
	for {
		if rc != nil {
			if err := w.wait(src, rc); err != nil {
				return err
			}
		}
		n, err := src.Read(first[:])
		if n > 0 {
			bp := coalescePool.Get().(*[]byte)
			k := copy(*bp, first[:n])
			if err == nil {
				k, _, err = gather(src, *bp, k)
			}
			werr := cs.write(dst, (*bp)[:k], wt)
			coalescePool.Put(bp)
			if werr != nil {
				return werr
			}
		}
		if err != nil {
			return err
		}
	}
}

// longAgo is a deadline in the past: reads return at once with what is
// available.
var longAgo = time.Unix(1, 0)

// copyIdle copies downstream to upstream, ending with
// os.ErrDeadlineExceeded when the client sends nothing for idle, and with
// errStalled when the upstream takes nothing for wt. It waits for the
// client's socket to be readable before taking a buffer from the pool, at
// w, where it may park (the idle deadline then goes with it). It shows cs
// the client's bytes before passing them on. A TLS client's bytes may wait
// decrypted inside crypto/tls, where a socket poll cannot see them: it
// reads those without waiting (through the gatherConn under the TLS
// connection) until crypto/tls needs the socket again, and only then
// waits. A connection with neither (tests' pipes) is read into a small
// buffer of its own, blocking, and never parks.
//
// The other direction ends it by setting stop and then src's read
// deadline to now (and waking it if parked). Because the loop sets its
// own deadline before it looks at stop, and parks only after looking at
// stop under the splice's lock, that wake-up cannot be lost.
func copyIdle(dst, src net.Conn, idle, wt time.Duration, stop *atomic.Bool, cs *clientStream, w *dirWait) error {
	var rc syscall.RawConn
	var gc *gatherConn // a TLS client's socket
	var own []byte
	if tc, ok := src.(*net.TCPConn); ok {
		rc, _ = tc.SyscallConn()
	} else if gc = gatherUnder(src); gc != nil {
		rc = gc.rc
	} else {
		own = make([]byte, 4<<10)
	}
	parks := rc != nil && w.parks()
	stopped := func() bool { return stop != nil && stop.Load() }
	// from is when the idle time began: the last bytes from the client,
	// or the last time the upstream was seen still sending.
	from := time.Now()
	if parks {
		w.p.parked.Lock()
		from = w.p.parked.idleFrom
		w.p.parked.Unlock()
	}
	// drained: src holds nothing in user space, so the socket's
	// readiness tells whether bytes came. A TLS client may start with
	// records crypto/tls read ahead.
	drained := gc == nil
	for {
		idleAt := from.Add(idle)
		deadline := idleAt
		if t := time.Now().Add(parkAfter); parks && t.Before(idleAt) {
			deadline = t
		}
		src.SetReadDeadline(deadline)
		if stopped() {
			return io.EOF
		}
		if rc != nil && drained {
			if err := waitReadable(rc); err != nil {
				if parks && errors.Is(err, os.ErrDeadlineExceeded) && !stopped() && time.Now().Before(idleAt) {
					// Quiet, not idle yet: park until the client
					// sends or its idle time ends.
					releaseTLSBuffers(src)
					if w.park(rc, idleAt, func() bool {
						if stopped() {
							return false
						}
						w.p.parked.idleFrom = from
						return true
					}) {
						return errParked
					}
					continue
				}
				if streaming(err, idle, stop, cs) {
					from = time.Now()
					continue
				}
				return err
			}
		}
		var n int
		var err, werr error
		buf, bp := own, (*[]byte)(nil)
		if own == nil {
			bp = bufPool.Get().(*[]byte)
			buf = *bp
		}
		if gc != nil {
			gc.nonblocking = true
		}
		n, err = src.Read(buf)
		if gc != nil {
			gc.nonblocking = false
			// Nothing more without the socket (or the deadline,
			// which the wait sees again): wait. It may come with
			// data: crypto/tls, having returned a record's, looks
			// at a TLS 1.2 alert record behind it (to report a
			// close_notify along) that has only begun to arrive.
			drained = errors.Is(err, os.ErrDeadlineExceeded)
			if drained {
				err = nil
			}
		}
		if n > 0 {
			cs.fromClient(buf[:n])
			werr = writeWithin(dst, buf[:n], wt)
		}
		if bp != nil {
			bufPool.Put(bp)
		}
		if werr != nil {
			return werr
		}
		if err != nil {
			if n == 0 && streaming(err, idle, stop, cs) {
				from = time.Now()
				continue
			}
			return err
		}
		if n > 0 {
			from = time.Now()
			if h := idleReadHook.Load(); h != nil {
				(*h)()
			}
		}
	}
}

// streaming reports whether err, the client's idle deadline passing, must
// not end the session because the upstream is still sending to the
// client (a long FETCH or RETR to a slow client): the client is reading,
// not idle. Another direction's stop is never mistaken for it.
func streaming(err error, idle time.Duration, stop *atomic.Bool, cs *clientStream) bool {
	return errors.Is(err, os.ErrDeadlineExceeded) && (stop == nil || !stop.Load()) && cs != nil && cs.downWithin(idle)
}

// idleReadHook, when set (by tests), runs after each chunk copyIdle
// passes on.
var idleReadHook atomic.Pointer[func()]

// waitReadable waits until the socket has bytes or its end to read,
// without reading them, honouring the read deadline.
func waitReadable(rc syscall.RawConn) error {
	var peek [1]byte
	return rc.Read(func(fd uintptr) bool {
		_, _, err := syscall.Recvfrom(int(fd), peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return err != syscall.EAGAIN
	})
}
