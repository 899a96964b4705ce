package proxy

import (
	"bytes"
	"testing"
)

// idlePipeCount is how many pipes the pool holds.
func idlePipeCount() int {
	idlePipes.Lock()
	defer idlePipes.Unlock()
	return len(idlePipes.list)
}

// emptyPipePool closes the pipes the pool holds.
func emptyPipePool() {
	idlePipes.Lock()
	l := idlePipes.list
	idlePipes.list = nil
	idlePipes.Unlock()
	for _, p := range l {
		p.close()
	}
}

// The octets of a literal pass through a pipe, unseen; those of lines
// through a buffer, where the session sees where they end.
func TestSpliceLiteralsLinesSeen(t *testing.T) {
	emptyPipePool()
	s := newSplicedSession(t)
	s.pass(t, bytes.Repeat([]byte(`* 1 FETCH (FLAGS (\Seen))`+"\r\n"), 10000))
	if n := idlePipeCount(); n != 0 {
		t.Errorf("after lines only the pool holds %d pipes, want 0: lines must be seen, not spliced", n)
	}
	s.pass(t, fetchResponse(t, 5<<20+123))
	// The next transfer starts after the last one gave its pipe back.
	s.pass(t, []byte("* 2 EXISTS\r\n"))
	if n := idlePipeCount(); n == 0 {
		t.Error("a 5 MB literal went through no pipe: it was not spliced")
	}
	s.cs.lock()
	at, state := s.cs.atBoundary(), trackerState(&s.cs.lines)
	s.cs.unlock()
	if !at {
		t.Errorf("after whole responses the stream is not at a line boundary (%s)", state)
	}
}
