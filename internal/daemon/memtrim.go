package daemon

import (
	"context"
	"math"
	"os"
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
// (debug.FreeOSMemory): one collection per burst, none while relayd is busy,
// at most one a minute while it stays idle. Many goroutines ending counts as a burst too: idle
// sessions park (proxy/park.go) a second after their last bytes, and
// the stacks of their goroutines are garbage only the next collection
// frees, which an idle daemon runs every two minutes.

// gcPercent is the collector's target (GOGC) relayd sets unless GOGC is
// in its environment: the heap may grow by half its live size between
// collections, where Go's default lets it double. relayd's live heap is
// mostly sessions that wait for weeks, and whatever the heap reaches while
// they open (a burst of logins, their TLS handshakes' garbage) the runtime
// keeps for good in its metadata and in fragmentation: at 50 an idle
// session behind a TLS upstream holds about 1 KB less (docs/decisions.md,
// "GOGC=50"). The price is more collections per allocated byte, which at
// relayd's small heaps are cheap: SMTP acceptance's CPU per message did
// not move beyond the noise. Prometheus made the same choice (75) for the
// same reason.
const gcPercent = 50

// tuneGC sets the collector's target to gcPercent unless the environment
// sets GOGC, and reports the target in effect (-1: off).
func tuneGC() int {
	if os.Getenv("GOGC") != "" {
		// Read without setting: setting even for a moment would turn
		// a GOGC=off collector on.
		s := []metrics.Sample{{Name: "/gc/gogc:percent"}}
		metrics.Read(s)
		if v := s[0].Value.Uint64(); v <= math.MaxInt32 {
			return int(v)
		}
		return -1 // off: the runtime's -1, as a uint64
	}
	debug.SetGCPercent(gcPercent)
	return gcPercent
}

// trimDefaults are the trimmer's thresholds: a stretch that allocated at
// least busy bytes, then an interval that allocated less than quiet.
// A drop of trimGoroutines goroutines from the most since the last trim
// counts as busy. So does free heap the runtime has not given back (memory
// a collection freed after the last trim) of at least trimFree bytes and a
// quarter of the live heap, at most once per trimFreeTicks intervals: the
// runtime keeps free memory up to the heap's goal, one and a half times
// the live heap, for the next cycle, so after sessions that opened and
// parked it would keep a third more than they need for good; and every
// collection of an idle daemon's small garbage leaves some, which is worth
// giving back now and then, not after every collection.
const (
	trimEvery      = 5 * time.Second
	trimBusy       = 8 << 20
	trimQuiet      = 1 << 20
	trimGoroutines = 256
	trimFree       = 1 << 20
	trimFreeTicks  = 12 // a minute
)

// trimmer decides when to trim, from the bytes allocated so far and the
// goroutines there are.
type trimmer struct {
	busy, quiet uint64
	goroutines  uint64 // a drop from peak this large counts as busy
	free        uint64 // this much free heap not given back, and a quarter of the live heap, counts as busy
	freeTicks   int    // but only this many ticks after the last trim
	last        uint64 // allocated at the previous tick
	since       uint64 // allocated since the last trim
	peak        uint64 // the most goroutines seen since the last trim
	ticks       int    // ticks since the last trim
}

// tick is called every interval with the bytes allocated so far, the
// goroutines now, the free heap not given back and the live heap; it
// reports whether to trim now.
func (t *trimmer) tick(allocated, goroutines, free, live uint64) bool {
	d := allocated - t.last
	t.last = allocated
	t.since += d
	t.peak = max(t.peak, goroutines)
	t.ticks++
	ended := t.goroutines > 0 && goroutines+t.goroutines <= t.peak
	unreleased := t.free > 0 && free >= t.free && free >= live/4 && t.ticks >= t.freeTicks
	if d < t.quiet && (t.since >= t.busy || ended || unreleased) {
		t.since = 0
		t.peak = goroutines
		t.ticks = 0
		return true
	}
	return false
}

// trimMemory runs the trimmer every interval until ctx is done.
func trimMemory(ctx context.Context, every time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/sched/goroutines:goroutines"},
		{Name: "/memory/classes/heap/free:bytes"}, {Name: "/gc/heap/live:bytes"}}
	read := func() (allocated, goroutines, free, live uint64) {
		metrics.Read(sample)
		return sample[0].Value.Uint64(), sample[1].Value.Uint64(), sample[2].Value.Uint64(), sample[3].Value.Uint64()
	}
	a, g, _, _ := read()
	t := &trimmer{busy: trimBusy, quiet: trimQuiet, goroutines: trimGoroutines, free: trimFree, freeTicks: trimFreeTicks, last: a, peak: g}
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if t.tick(read()) {
			// Two collections: the burst's sessions wait on stacks
			// their logins grew, and a collection gives back at most
			// half of each goroutine's stack.
			runtime.GC()
			debug.FreeOSMemory()
			t.last, _, _, _ = read()
		}
	}
}
