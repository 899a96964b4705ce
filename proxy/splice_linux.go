package proxy

import (
	"io"
	"math"
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

// spliceTCP copies src to dst until src ends. The octets of literals
// (message bodies, the bulk of a FETCH) pass from one socket to the other
// inside the kernel with splice(2); the octets of lines are read into a
// buffer and written, so that cs sees where each line ends and which
// literal it announces. Such a read takes a small buffer, so that little of
// the literal a line announces goes through it, and a large one while a
// line runs on for more than a small buffer. While src has nothing to read
// it holds no pipe and no buffer, and may park at w. It returns nil at
// src's end.
func spliceTCP(dst, src *net.TCPConn, wt time.Duration, cs *clientStream, w *dirWait) error {
	srcRC, err := src.SyscallConn()
	if err != nil {
		return err
	}
	dstRC, err := dst.SyscallConn()
	if err != nil {
		return err
	}
	// long: the octets of lines filled a buffer, and no literal has come
	// since.
	long := false
	for {
		if err := w.wait(src, srcRC); err != nil {
			return err
		}
		limit := cs.unseenLimit()
		var p *splicePipe
		if limit > 0 {
			p = getPipe()
		}
		if p == nil {
			// Octets of a line, or no pipe (file descriptors
			// exhausted): a buffered copy of what is there.
			eof, filled, err := copyAvailable(dst, src, wt, cs, long)
			if eof || err != nil {
				return err
			}
			long = cs.lines.literal == 0 && (filled || long && cs.lines.midLine)
			continue
		}
		cs.lock()
		moved, eof, err := spliceAvailable(dst, dstRC, srcRC, p, wt, int64(min(limit, math.MaxInt64)), cs.noteDown)
		cs.lines.passed(uint64(moved))
		cs.unlock()
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

// spliceAvailable moves what src has to dst through p, at most limit
// octets, until src has nothing more to read for now or has ended (eof).
// It returns how many octets it moved. p is empty when it returns without
// an error. moving is called whenever octets went to dst: a slow client
// keeps the upstream's bytes waiting, so one call may move a long literal
// for longer than the client's idle timeout, and the client is not idle.
func spliceAvailable(dst net.Conn, dstRC, srcRC syscall.RawConn, p *splicePipe, wt time.Duration, limit int64, moving func()) (moved int64, eof bool, err error) {
	for moved < limit {
		var n int64
		var serr error
		if err := srcRC.Read(func(fd uintptr) bool {
			n, serr = unix.Splice(int(fd), nil, p.w, nil, int(min(limit-moved, spliceMax)), unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
			return serr != unix.EINTR
		}); err != nil {
			return moved, false, err
		}
		switch {
		case serr == unix.EAGAIN:
			return moved, false, nil // nothing more for now
		case serr != nil:
			return moved, false, serr
		case n == 0:
			return moved, true, nil
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
				return moved, false, stalled(err)
			}
			if werr != nil {
				return moved, false, werr
			}
			if m == 0 {
				return moved, false, io.ErrShortWrite
			}
			n -= m
			moved += m
			moving()
		}
	}
	return moved, false, nil
}

// copyAvailable copies what src has to dst with a pooled buffer (a large
// one if large), through cs: for the octets of lines, and for when no pipe
// can be had. It reports whether the read filled the buffer.
func copyAvailable(dst, src *net.TCPConn, wt time.Duration, cs *clientStream, large bool) (eof, filled bool, err error) {
	pool := &bufPool
	if large {
		pool = &coalescePool
	}
	bp := pool.Get().(*[]byte)
	defer pool.Put(bp)
	n, err := src.Read(*bp)
	if n > 0 {
		if werr := cs.write(dst, (*bp)[:n], wt); werr != nil {
			return false, false, werr
		}
	}
	if err != nil {
		if err == io.EOF {
			return true, false, nil
		}
		return false, false, err
	}
	return false, n == len(*bp), nil
}
