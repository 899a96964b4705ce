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
// (debug.FreeOSMemory): one collection per burst, none while relayd is
// busy. Many goroutines ending counts as a burst too: idle sessions park
// (proxy/park.go) a second after their last bytes, and wake when their
// upstream sends something, and the stacks of their goroutines go back to the
// heap, where the runtime keeps them.

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
// trimGoroutines goroutines that ended since the last trim count as busy
// (their stacks are free), at most once per trimEndedTicks intervals: a
// daemon with thousands of idle sessions wakes some every second, and a
// collection of its heap every five seconds would cost more than it gives
// back. So does free heap the runtime has not given back (memory
// a collection freed after the last trim) of at least trimFree bytes and a
// quarter of the live heap, at most once per trimFreeTicks intervals: the
// runtime keeps free memory up to the heap's goal, one and a half times
// the live heap, for the next cycle, so after sessions that opened and
// parked it would keep a third more than they need for good; and every
// collection of an idle daemon's small garbage leaves some, which is worth
// giving back now and then, not after every collection. And a heap (in use
// and free) larger than the goal by trimFree and an eighth of the goal
// counts at once: a wave of goroutines (parked sessions woken together)
// takes stacks and leaves them free, beyond anything the next cycle needs.
const (
	trimEvery      = 5 * time.Second
	trimBusy       = 8 << 20
	trimQuiet      = 1 << 20
	trimGoroutines = 256
	trimFree       = 1 << 20
	trimFreeTicks  = 12 // a minute
	trimEndedTicks = 6  // half a minute
)

// trimSample is what the trimmer reads every interval (runtime/metrics).
type trimSample struct {
	allocated  uint64 // bytes allocated so far
	goroutines uint64 // goroutines now
	created    uint64 // goroutines created so far
	free       uint64 // free heap not given back to the system
	live       uint64 // the live heap, as of the last collection
	inUse      uint64 // the heap's objects, live or not yet collected, and their spans' unused room
	goal       uint64 // the heap's size at which the next collection starts
}

// readTrimSample reads a trimSample.
func readTrimSample(s []metrics.Sample) trimSample {
	metrics.Read(s)
	return trimSample{allocated: s[0].Value.Uint64(), goroutines: s[1].Value.Uint64(), created: s[2].Value.Uint64(),
		free: s[3].Value.Uint64(), live: s[4].Value.Uint64(), inUse: s[5].Value.Uint64() + s[6].Value.Uint64(),
		goal: s[7].Value.Uint64()}
}

// trimMetrics are the runtime/metrics names readTrimSample reads, in order.
var trimMetrics = []string{"/gc/heap/allocs:bytes", "/sched/goroutines:goroutines",
	"/sched/goroutines-created:goroutines", "/memory/classes/heap/free:bytes", "/gc/heap/live:bytes",
	"/memory/classes/heap/objects:bytes", "/memory/classes/heap/unused:bytes", "/gc/heap/goal:bytes"}

// trimmer decides when to trim, from what relayd allocated and the
// goroutines it created and ended since the last trim.
type trimmer struct {
	busy, quiet uint64
	goroutines  uint64 // this many goroutines ended since the last trim count as busy
	free        uint64 // this much free heap not given back, and a quarter of the live heap, counts as busy
	freeTicks   int    // but only this many ticks after the last trim
	endedTicks  int    // and ended goroutines only this many
	last        uint64 // allocated at the previous tick
	since       uint64 // allocated since the last trim
	created     uint64 // goroutines created, at the last trim
	running     uint64 // goroutines there were at the last trim
	ticks       int    // ticks since the last trim
}

// start makes the trimmer count from s.
func (t *trimmer) start(s trimSample) {
	t.last, t.since, t.created, t.running, t.ticks = s.allocated, 0, s.created, s.goroutines, 0
}

// tick is called every interval with a new sample; it reports whether to
// trim now.
func (t *trimmer) tick(s trimSample) bool {
	d := s.allocated - t.last
	t.last = s.allocated
	t.since += d
	t.ticks++
	// Goroutines that ended since the last trim: those created since,
	// less how many more there are now. Counted, not sampled: a thousand
	// parked sessions woken together (by their upstream, in the
	// benchmark; what Dovecot sends then is not known) start and end a
	// goroutine each within a second, between two ticks.
	ended := int64(s.created-t.created) - (int64(s.goroutines) - int64(t.running))
	churned := t.goroutines > 0 && ended >= int64(t.goroutines) && t.ticks >= t.endedTicks
	unreleased := t.free > 0 && s.free >= t.free && s.free >= s.live/4 && t.ticks >= t.freeTicks
	// Heap kept beyond what the next cycle may use: the runtime would
	// keep it until a collection, which an idle daemon runs every two
	// minutes, and then keep the free part for good.
	beyond := t.free > 0 && s.inUse+s.free >= s.goal+max(t.free, s.goal/8)
	if d < t.quiet && (t.since >= t.busy || churned || unreleased || beyond) {
		t.start(s)
		return true
	}
	return false
}

// trimMemory runs the trimmer every interval until ctx is done.
func trimMemory(ctx context.Context, every time.Duration) {
	sample := make([]metrics.Sample, len(trimMetrics))
	for i, name := range trimMetrics {
		sample[i].Name = name
	}
	t := &trimmer{busy: trimBusy, quiet: trimQuiet, goroutines: trimGoroutines, free: trimFree, freeTicks: trimFreeTicks, endedTicks: trimEndedTicks}
	t.start(readTrimSample(sample))
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
		}
		if t.tick(readTrimSample(sample)) {
			// Two collections: the burst's sessions wait on stacks
			// their logins grew, and a collection gives back at most
			// half of each goroutine's stack.
			runtime.GC()
			debug.FreeOSMemory()
			t.start(readTrimSample(sample))
		}
	}
}
