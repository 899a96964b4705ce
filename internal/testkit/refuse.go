package testkit

import (
	"net"
	"strconv"
	"sync"
	"syscall"
)

// A Refuser holds a loopback port where every connection is refused.
//
// A closed listener's port is no such place: the kernel may hand it to
// another test's listener a moment later, and then a dial meant to fail
// waits for a greeting that never comes. A Refuser binds a socket and
// never listens on it, so the port stays taken (without SO_REUSEADDR no
// listener can share it) and every connection attempt is answered with a
// reset.
type Refuser struct {
	// Addr is host:port.
	Addr string

	fd   int
	once sync.Once
}

// NewRefuser binds a port on 127.0.0.1.
func NewRefuser() (*Refuser, error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		syscall.Close(fd)
		return nil, err
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, err
	}
	port := sa.(*syscall.SockaddrInet4).Port
	return &Refuser{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), fd: fd}, nil
}

// Close gives the port up, so that a test may start a server there (the
// upstream coming back). Another listener may take it first; a test that
// needs it back retries or fails loudly.
func (r *Refuser) Close() {
	r.once.Do(func() { syscall.Close(r.fd) })
}

// RefusingAddr returns a loopback address where a connection is refused
// for as long as the test runs.
func RefusingAddr(t TB) string {
	t.Helper()
	r, err := NewRefuser()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.Close)
	return r.Addr
}
