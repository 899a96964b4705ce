package daemon

import "testing"

func TestTrimmer(t *testing.T) {
	const mb = 1 << 20
	for _, tc := range []struct {
		name string
		// allocated so far at each tick, in MB; want the ticks that trim.
		allocated []uint64
		want      []int
	}{
		{"idle: never", []uint64{0, 0, 0, 0}, nil},
		{"a burst, then quiet: once", []uint64{20, 20, 20, 20}, []int{1}},
		{"busy throughout: not while busy", []uint64{10, 20, 30, 40, 40}, []int{4}},
		{"a trickle below busy: not", []uint64{0, 0, 0, 0, 0, 0, 0}, nil},
		{"a trickle adds up: once it passes busy", []uint64{3, 6, 9, 9}, []int{3}},
		{"two bursts: twice", []uint64{30, 30, 60, 60}, []int{1, 3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := &trimmer{busy: trimBusy, quiet: trimQuiet}
			var got []int
			for i, a := range tc.allocated {
				if tr.tick(a * mb) {
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
