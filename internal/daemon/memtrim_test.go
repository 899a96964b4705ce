package daemon

import "testing"

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
	}{
		{"idle: never", []uint64{0, 0, 0, 0}, nil, nil, nil},
		{"a burst, then quiet: once", []uint64{20, 20, 20, 20}, []int{1}, nil, nil},
		{"busy throughout: not while busy", []uint64{10, 20, 30, 40, 40}, []int{4}, nil, nil},
		{"a trickle below busy: not", []uint64{0, 0, 0, 0, 0, 0, 0}, nil, nil, nil},
		{"a trickle adds up: once it passes busy", []uint64{3, 6, 9, 9}, []int{3}, nil, nil},
		{"two bursts: twice", []uint64{30, 30, 60, 60}, []int{1, 3}, nil, nil},
		{"sessions park (goroutines end), quiet: once", []uint64{0, 0, 0, 0, 0}, []int{2}, []uint64{1000, 1100, 30, 30, 30}, nil},
		{"goroutines end while busy: once quiet", []uint64{0, 10, 20, 20}, []int{3}, []uint64{1000, 30, 30, 30}, nil},
		{"a few goroutines come and go: not", []uint64{0, 0, 0, 0}, nil, []uint64{300, 100, 300, 100}, nil},
		{"free heap left after a collection, quiet: trimmed", []uint64{0, 0, 0}, []int{1}, nil, []uint64{1, 6, 0}},
		{"free heap left while busy: once quiet", []uint64{2, 4, 4}, []int{2}, nil, []uint64{6, 6, 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trimmer{busy: trimBusy, quiet: trimQuiet, goroutines: trimGoroutines, free: trimFree}
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
				if tr.tick(a*mb, g, free) {
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
