package proxy

import (
	"errors"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peekAlive looks at c's socket without reading from it or blocking
// (MSG_PEEK|MSG_DONTWAIT): nothing to read means open and quiet (ok);
// end of stream, bytes or an error mean it must not be used. known is
// false when c has no socket.
func peekAlive(c net.Conn) (ok, known bool) {
	sc, is := c.(syscall.Conn)
	if !is {
		return false, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false, true
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true
	})
	if err != nil {
		return false, true
	}
	return errors.Is(perr, unix.EAGAIN), true
}
