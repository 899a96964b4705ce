package proxy

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// The parker's Linux side: one epoll set, waited on by one goroutine,
// for every parked direction's socket. Each socket is added for one
// event (EPOLLONESHOT) and taken out again when it fires or is
// cancelled, under the socket's own reference (RawConn.Control), so that
// a socket closed meanwhile (which leaves an epoll set by itself) is
// never confused with another that got its number.

// canPark: directions may park here.
const canPark = true

// epollParker is the process's one epoll set of parked sockets.
var epollParker struct {
	once sync.Once
	fd   int
	err  error
}

// parkerFD returns the epoll set, made, with its waiting goroutine, on
// first use.
func parkerFD() (int, error) {
	p := &epollParker
	p.once.Do(func() {
		p.fd, p.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
		if p.err == nil {
			go epollWaitLoop(p.fd)
		}
	})
	return p.fd, p.err
}

// epollWaitLoop hands each ready socket's parking its wake-up. It runs
// as long as the process: one goroutine, on one thread, for all parked
// sessions.
func epollWaitLoop(epfd int) {
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(epfd, events, -1)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			// Not expected (EBADF, EINVAL): parked directions would
			// never wake, so wake them all; none parks again.
			parkings.failAll()
			return
		}
		for _, ev := range events[:n] {
			id := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if pk := parkings.get(id); pk != nil {
				pk.fire()
			}
		}
	}
}

// register adds rc's socket to the epoll set for one readiness event
// (bytes, the peer's end, or an error) under id.
func register(rc syscall.RawConn, id uint64) error {
	epfd, err := parkerFD()
	if err != nil {
		return err
	}
	var cerr error
	err = rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{
			Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT,
			Fd:     int32(uint32(id)),
			Pad:    int32(uint32(id >> 32)),
		}
		cerr = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err != nil {
		return err
	}
	return cerr
}

// unregister takes rc's socket out of the epoll set. A socket already
// closed has left it by itself.
func unregister(rc syscall.RawConn) {
	epfd, err := parkerFD()
	if err != nil {
		return
	}
	rc.Control(func(fd uintptr) {
		unix.EpollCtl(epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
}
