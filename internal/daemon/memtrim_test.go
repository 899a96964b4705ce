package daemon

import (
	"runtime/debug"
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
	for _, tc := range []struct {
		name string
		// allocated so far at each tick, in MB; want the ticks that trim.
		allocated []uint64
		want      []int
		// goroutines at each tick; none: 10 throughout.
		goroutines []uint64
		// free heap not given back at each tick, in MB; none: 0.
		free []uint64
		// the live heap, in MB; 0: 4.
		live uint64
	}{
		{"idle: never", []uint64{0, 0, 0, 0}, nil, nil, nil, 0},
		{"a burst, then quiet: once", []uint64{20, 20, 20, 20}, []int{1}, nil, nil, 0},
		{"busy throughout: not while busy", []uint64{10, 20, 30, 40, 40}, []int{4}, nil, nil, 0},
		{"a trickle below busy: not", []uint64{0, 0, 0, 0, 0, 0, 0}, nil, nil, nil, 0},
		{"a trickle adds up: once it passes busy", []uint64{3, 6, 9, 9}, []int{3}, nil, nil, 0},
		{"two bursts: twice", []uint64{30, 30, 60, 60}, []int{1, 3}, nil, nil, 0},
		{"sessions park (goroutines end), quiet: once", []uint64{0, 0, 0, 0, 0}, []int{2}, []uint64{1000, 1100, 30, 30, 30}, nil, 0},
		{"goroutines end while busy: once quiet", []uint64{0, 10, 20, 20}, []int{3}, []uint64{1000, 30, 30, 30}, nil, 0},
		{"a few goroutines come and go: not", []uint64{0, 0, 0, 0}, nil, []uint64{300, 100, 300, 100}, nil, 0},
		{"free heap left after a collection, quiet: trimmed", []uint64{0, 0, 0}, []int{1}, nil, []uint64{0, 6, 0}, 0},
		{"free heap left while busy: once quiet", []uint64{2, 4, 4}, []int{2}, nil, []uint64{6, 6, 6}, 0},
		{"a few MB free of a small heap: trimmed", []uint64{0, 0, 0}, []int{1}, nil, []uint64{0, 3, 0}, 8},
		{"free heap after every collection while idle: not more often than freeTicks", []uint64{0, 0, 0, 0, 0, 0}, []int{1, 3, 5}, nil, []uint64{3, 3, 3, 3, 3, 3}, 4},
		{"free heap small beside the live heap: not", []uint64{0, 0, 0}, nil, nil, []uint64{3, 3, 3}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// The test's minute is two ticks.
			tr := &trimmer{busy: trimBusy, quiet: trimQuiet, goroutines: trimGoroutines, free: trimFree, freeTicks: 2}
			var got []int
			for i, a := range tc.allocated {
				g := uint64(10)
				if tc.goroutines != nil {
					g = tc.goroutines[i]
				}
				var free uint64
				if tc.free != nil {
					free = tc.free[i] * mb
				}
				live := tc.live
				if live == 0 {
					live = 4
				}
				if tr.tick(a*mb, g, free, live*mb) {
					got = append(got, i)
				}
			}
			if len(got) != len(tc.want) {
				t.Fatalf("trimmed at ticks %v, want %v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Fatalf("trimmed at ticks %v, want %v", got, tc.want)
				}
			}
		})
	}
}
