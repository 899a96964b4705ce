package daemon

import (
	"context"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// After a burst of work (a thousand clients logging in at once: TLS
// handshakes, bcrypt, token refreshes) the Go heap holds the burst's
// garbage until the next garbage collection, which an idle daemon may not
// run for minutes, and the runtime gives freed pages back to the operating
// system only gradually. Idle sessions need a few KB each, so relayd's
// resident memory would stay at the burst's peak. The trimmer watches how
// much relayd allocates; once a busy stretch is followed by a quiet
// interval, it collects and returns the free memory at once
// (debug.FreeOSMemory): one collection per burst, none while relayd is busy
// or stays idle.

// trimDefaults are the trimmer's thresholds: a stretch that allocated at
// least busy bytes, then an interval that allocated less than quiet.
const (
	trimEvery = 5 * time.Second
	trimBusy  = 8 << 20
	trimQuiet = 1 << 20
)

// trimmer decides when to trim, from the bytes allocated so far.
type trimmer struct {
	busy, quiet uint64
	last        uint64 // allocated at the previous tick
	since       uint64 // allocated since the last trim
}

// tick is called every interval with the bytes allocated so far; it
// reports whether to trim now.
func (t *trimmer) tick(allocated uint64) bool {
	d := allocated - t.last
	t.last = allocated
	t.since += d
	if d < t.quiet && t.since >= t.busy {
		t.since = 0
		return true
	}
	return false
}

// trimMemory runs the trimmer every interval until ctx is done.
func trimMemory(ctx context.Context, every time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	allocated := func() uint64 {
		metrics.Read(sample)
		return sample[0].Value.Uint64()
	}
	t := &trimmer{busy: trimBusy, quiet: trimQuiet, last: allocated()}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if t.tick(allocated()) {
			// Two collections: the burst's sessions wait on stacks
			// their logins grew, and a collection gives back at most
			// half of each goroutine's stack.
			runtime.GC()
			debug.FreeOSMemory()
			t.last = allocated()
		}
	}
}
