package proxy

import (
	"testing"
	"time"
)

// A BYE waits for a write in progress, and gives up at its deadline.
func TestClientStreamLockBy(t *testing.T) {
	cs := newClientStream()
	cs.lock() // a write in progress
	got := make(chan bool)
	go func() { got <- cs.lockBy(time.Now().Add(time.Hour)) }()
	cs.unlock()
	if !<-got {
		t.Fatal("lockBy() = false after the write ended, want true")
	}
	// Now the BYE holds it; a second one gives up at its deadline.
	if cs.lockBy(time.Now().Add(10 * time.Millisecond)) {
		t.Fatal("lockBy() = true while the lock is held, want false at the deadline")
	}
	cs.unlock()
	if !cs.lockBy(time.Now()) {
		t.Error("lockBy() = false on a free lock, want true")
	}
}

// The client asking for COMPRESS, in any case and across reads, leaves
// relayd no line boundary.
func TestClientStreamCompress(t *testing.T) {
	cs := newClientStream()
	cs.fromClient([]byte("a NOOP\r\nb comp"))
	if !cs.atBoundary() {
		t.Fatal("not at a boundary before COMPRESS")
	}
	cs.fromClient([]byte("ress deflate\r\n"))
	if cs.atBoundary() {
		t.Error("at a boundary after the client sent COMPRESS")
	}
	if cs.unseenLimit() == 0 {
		t.Error("after COMPRESS the upstream's octets are still read for lines, want them spliced unseen")
	}
}
