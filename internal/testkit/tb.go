package testkit

import (
	"bytes"
	"sync"
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
