package proxy

import (
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// spliceMax is the most one splice(2) call moves, and the size of the
// pipes: 1 MiB, the default /proc/sys/fs/pipe-max-size (as Go's own
// splice uses).
const spliceMax = 1 << 20

// A splicePipe is the pipe splice(2) moves bytes through between two
// sockets.
type splicePipe struct{ r, w int }

// maxIdlePipes is how many empty pipes relayd keeps for the next transfer.
const maxIdlePipes = 16

// idlePipes holds empty pipes. A pipe costs two file descriptors, so a
// session takes one only while bytes are moving: io.Copy between two
// TCPConns holds one for the whole session, which halves the number of
// idle sessions an open-file limit allows. A plain list rather than a
// sync.Pool, which would leave dropped pipes open until a garbage
// collection.
var idlePipes struct {
	sync.Mutex
	list []*splicePipe
}

// getPipe returns an empty pipe, or nil when none can be made (file
// descriptors exhausted).
func getPipe() *splicePipe {
	idlePipes.Lock()
	if n := len(idlePipes.list); n > 0 {
		p := idlePipes.list[n-1]
		idlePipes.list = idlePipes.list[:n-1]
		idlePipes.Unlock()
		return p
	}
	idlePipes.Unlock()
	var fds [2]int
	if err := unix.Pipe2(fds[:], unix.O_CLOEXEC|unix.O_NONBLOCK); err != nil {
		return nil
	}
	// A bigger pipe moves more per call; when the limit refuses it, the
	// default (64 KiB) still works.
	unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, spliceMax)
	return &splicePipe{r: fds[0], w: fds[1]}
}

// putPipe keeps an empty pipe for later, or closes it.
func putPipe(p *splicePipe) {
	idlePipes.Lock()
	if len(idlePipes.list) < maxIdlePipes {
		idlePipes.list = append(idlePipes.list, p)
		p = nil
	}
	idlePipes.Unlock()
	if p != nil {
		p.close()
	}
}

// close closes both ends.
func (p *splicePipe) close() {
	unix.Close(p.r)
	unix.Close(p.w)
}

// spliceTCP copies src to dst with splice(2) until src ends: the bytes
// pass from one socket to the other inside the kernel. While src has
// nothing to read it holds no pipe and no buffer. It returns nil at src's
// end.
func spliceTCP(dst, src *net.TCPConn, wt time.Duration) error {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	for {
		if err := waitReadable(srcRC); err != nil {
			return err
		}
		p := getPipe()
		if p == nil {
			// No pipe (file descriptors exhausted): fall back to a
			// buffered copy of what is there.
			if eof, err := copyAvailable(dst, src, wt); eof || err != nil {
				return err
			}
			continue
		}
		eof, err := spliceAvailable(dst, dstRC, srcRC, p, wt)
		if err != nil {
			// The pipe may still hold bytes; it cannot be reused.
			p.close()
			return err
		}
		putPipe(p)
		if eof {
			return nil
		}
	}
}

// spliceAvailable moves what src has to dst through p, until src has
// nothing more to read for now (eof false) or has ended (eof true). p is
// empty when it returns without an error.
func spliceAvailable(dst net.Conn, dstRC, srcRC syscall.RawConn, p *splicePipe, wt time.Duration) (eof bool, err error) {
	for {
		var n int64
		var serr error
		if err := srcRC.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, spliceMax, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return serr != unix.EINTR
		}); err != nil {
			return false, err
		}
		switch {
		case serr == unix.EAGAIN:
			return false, nil // nothing more for now
		case serr != nil:
			return false, serr
		case n == 0:
			return true, nil
		}
		for n > 0 {
			var m int64
			var werr error
			dst.SetWriteDeadline(time.Now().Add(wt))
			if err := dstRC.Write(func(fd uintptr) bool {
				m, werr = unix.Splice(p.r, nil, int(fd), nil, int(n), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
				// EAGAIN: the socket's buffer is full; wait until it
				// can take more.
				return werr != unix.EAGAIN && werr != unix.EINTR
			}); err != nil {
				return false, stalled(err)
			}
			if werr != nil {
				return false, werr
			}
			if m == 0 {
				return false, io.ErrShortWrite
			}
			n -= m
		}
	}
}

// copyAvailable copies what src has to dst with a pooled buffer, for when
// no pipe can be had.
func copyAvailable(dst, src *net.TCPConn, wt time.Duration) (eof bool, err error) {
	bp := bufPool.Get().(*[]byte)
	defer bufPool.Put(bp)
	n, err := src.Read(*bp)
	if n > 0 {
		if werr := writeWithin(dst, (*bp)[:n], wt); werr != nil {
			return false, werr
		}
	}
	if err != nil {
		if err == io.EOF {
			return true, nil
		}
		return false, err
	}
	return false, nil
}
