package testkit

import (
	"bufio"
	"bytes"
	"net"
	"strings"
	"sync"
	"time"
)

// TB is the part of testing.TB the Start helpers use. It is declared here
// so that this package, which relayd demo links, does not import testing.
type TB interface {
	Helper()
	Fatal(args ...any)
	Cleanup(func())
}

// SyncBuffer is a bytes.Buffer safe for one writer (a child process's
// output, a logger) and concurrent readers.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns everything written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Await receives from ch until match accepts a value, and returns it. It
// fails the test, naming what, when nothing matches within timeout.
func Await[T any](t TB, ch <-chan T, what string, timeout time.Duration, match func(T) bool) T {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		select {
		case v := <-ch:
			if match(v) {
				return v
			}
		case <-deadline.C:
			t.Fatal("no " + what + " within " + timeout.String())
			var zero T
			return zero
		}
	}
}

// Greeting connects to addr and returns the connection (closed when the
// test ends) and the server's first line without its CRLF.
func Greeting(t TB, addr string) (net.Conn, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		t.Fatal("reading the greeting: ", err)
	}
	return c, strings.TrimRight(l, "\r\n")
}
