package web

import (
	"crypto/sha256"
	"encoding/json"
	"sync"
	"time"
)

// watch tells the live-update streams when what the main page shows has
// changed: one goroutine, running only while a stream is open, reads the
// status every UpdateInterval and hashes the mailbox section's data, so
// that N open pages cost one status read per interval and a render each
// per change, not N of both. Once a minute it announces a change anyway,
// so that "5 minutes ago" stays true on a page left open.
type watch struct {
	s *Server

	mu      sync.Mutex
	subs    int
	version uint64
	changed chan struct{} // closed at the next change
	stop    chan struct{} // closed to stop the goroutine, nil when none runs
}

// subscribe counts a stream and starts the goroutine for the first one.
// The stream calls unsubscribe when it ends.
func (w *watch) subscribe() (unsubscribe func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.subs++
	if w.stop == nil {
		stop := make(chan struct{})
		if w.changed == nil {
			w.changed = make(chan struct{})
		}
		if w.s.background(func() { w.run(stop) }) {
			w.stop = stop
		}
	}
	return func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		if w.subs--; w.subs == 0 && w.stop != nil {
			close(w.stop)
			w.stop = nil
		}
	}
}

// next returns the version now and a channel closed when it changes.
func (w *watch) next() (uint64, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.changed == nil {
		w.changed = make(chan struct{})
	}
	return w.version, w.changed
}

func (w *watch) announce() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.version++
	close(w.changed)
	w.changed = make(chan struct{})
}

func (w *watch) run(stop chan struct{}) {
	tick := time.NewTicker(w.s.o.UpdateInterval)
	defer tick.Stop()
	minute := time.NewTicker(time.Minute)
	defer minute.Stop()
	var last [32]byte
	for {
		if sum := w.fingerprint(); sum != last {
			last = sum
			w.announce()
		}
		select {
		case <-stop:
			return
		case <-w.s.ctx.Done():
			return
		case <-minute.C:
			w.announce()
		case <-tick.C:
		}
	}
}

// fingerprint hashes what the mailbox section shows, whoever looks.
func (w *watch) fingerprint() [32]byte {
	d := w.s.mailboxes(nil)
	b, _ := json.Marshal(struct {
		Banner   string
		Warnings []string
		Rows     []mailbox
	}{d.Banner, d.Warnings, d.Rows})
	return sha256.Sum256(b)
}
