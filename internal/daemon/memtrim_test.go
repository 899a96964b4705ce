package daemon

import (
	"fmt"
	"runtime/debug"
	"runtime/metrics"
	"testing"
)

// relayd collects at GOGC=50 unless its environment says otherwise.
func TestTuneGC(t *testing.T) {
	defer debug.SetGCPercent(debug.SetGCPercent(100))
	t.Setenv("GOGC", "")
	debug.SetGCPercent(100)
	if p := tuneGC(); p != gcPercent || debug.SetGCPercent(100) != gcPercent {
		t.Errorf("without GOGC: target %d, want %d", p, gcPercent)
	}
	t.Setenv("GOGC", "200") // as the runtime read it at start
	debug.SetGCPercent(200)
	if p := tuneGC(); p != 200 || debug.SetGCPercent(100) != 200 {
		t.Errorf("with GOGC=200: target %d, want 200 left alone", p)
	}
	t.Setenv("GOGC", "off")
	debug.SetGCPercent(-1)
	if p := tuneGC(); p != -1 || debug.SetGCPercent(100) != -1 {
		t.Errorf("with GOGC=off: target %d, want -1 (off) left alone", p)
	}
}

func TestTrimmer(t *testing.T) {
	const mb = 1 << 20
	// at is one tick's sample: allocated so far (MB), goroutines now,
	// goroutines created so far, free heap not given back (MB), heap in
	// use (MB; 0: the live heap); the live heap is 4 MB unless live is
	// set, the goal one and a half times that.
	type at struct{ alloc, g, created, free, inUse uint64 }
	quiet := func(n int) []at { return make([]at, n) }
	for _, tc := range []struct {
		name  string
		ticks []at
		want  []int // the ticks that trim
		live  uint64
	}{
		{"idle: never", quiet(4), nil, 0},
		{"a burst, then quiet: once", []at{{alloc: 20}, {alloc: 20}, {alloc: 20}, {alloc: 20}}, []int{1}, 0},
		{"busy throughout: not while busy", []at{{alloc: 10}, {alloc: 20}, {alloc: 30}, {alloc: 40}, {alloc: 40}}, []int{4}, 0},
		{"a trickle adds up: once it passes busy", []at{{alloc: 3}, {alloc: 6}, {alloc: 9}, {alloc: 9}}, []int{3}, 0},
		{"two bursts: twice", []at{{alloc: 30}, {alloc: 30}, {alloc: 60}, {alloc: 60}}, []int{1, 3}, 0},
		{"sessions open and park (goroutines end), quiet: once",
			[]at{{g: 1000, created: 1000}, {g: 1100, created: 1200}, {g: 30, created: 1200}, {g: 30, created: 1200}, {g: 30, created: 1200}}, []int{2}, 0},
		{"goroutines end while busy: once quiet",
			[]at{{g: 1000, created: 1000}, {alloc: 10, g: 30, created: 1000}, {alloc: 20, g: 30, created: 1000}, {alloc: 20, g: 30, created: 1000}}, []int{3}, 0},
		{"a wave between two ticks (keepalives wake parked sessions): once",
			[]at{{}, {created: 1000}, {created: 1000}, {created: 1000}}, []int{1}, 0},
		{"goroutines end at every tick (many idle sessions wake): not more often than endedTicks",
			[]at{{created: 300}, {created: 600}, {created: 900}, {created: 1200}, {created: 1500}}, []int{1, 3}, 0},
		{"sessions opened and still open: not",
			[]at{{g: 1000, created: 1000}, {g: 1000, created: 1000}, {g: 1000, created: 1000}}, nil, 0},
		{"a few goroutines come and go: not",
			[]at{{g: 100, created: 100}, {g: 10, created: 100}, {g: 100, created: 190}, {g: 10, created: 190}}, nil, 0},
		{"free heap left after a collection, quiet: trimmed", []at{{}, {free: 6}, {}}, []int{1}, 0},
		{"free heap left while busy: once quiet", []at{{alloc: 2, free: 6}, {alloc: 4, free: 6}, {alloc: 4, free: 6}}, []int{2}, 0},
		{"a few MB free of a small heap: trimmed", []at{{}, {free: 3}, {}}, []int{1}, 8},
		{"free heap small beside the live heap: not", []at{{free: 3}, {free: 3}, {free: 3}}, nil, 100},
		{"heap beyond the goal (a wave took stacks and left them): at once",
			[]at{{free: 3, inUse: 5}, {}}, []int{0}, 4},
		{"free heap within the goal after a collection: not at once",
			[]at{{free: 2}}, nil, 4},
		{"free heap after every collection while idle: not more often than freeTicks",
			[]at{{free: 2}, {free: 2}, {free: 2}, {free: 2}, {free: 2}, {free: 2}}, []int{1, 3, 5}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The test's minute is two ticks, and its half minute too.
			tr := &trimmer{busy: trimBusy, quiet: trimQuiet, goroutines: trimGoroutines, free: trimFree, freeTicks: 2, endedTicks: 2}
			live := tc.live
			if live == 0 {
				live = 4
			}
			tr.start(trimSample{live: live * mb})
			var got []int
			for i, a := range tc.ticks {
				inUse := a.inUse
				if inUse == 0 {
					inUse = live
				}
				if tr.tick(trimSample{allocated: a.alloc * mb, goroutines: a.g, created: a.created, free: a.free * mb, live: live * mb,
					inUse: inUse * mb, goal: live * mb * 3 / 2}) {
					got = append(got, i)
				}
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("trimmed at ticks %v, want %v", got, tc.want)
			}
		})
	}
}

// The trimmer's metrics exist in this Go: a missing one reads as zero and
// would quietly disable its rule.
func TestTrimMetrics(t *testing.T) {
	known := map[string]bool{}
	for _, d := range metrics.All() {
		known[d.Name] = d.Kind == metrics.KindUint64
	}
	for _, name := range trimMetrics {
		if !known[name] {
			t.Errorf("runtime/metrics has no uint64 %s", name)
		}
	}
}
