package fault

import "testing"

// An armed registry sees every point reached; disarmed, Hit does nothing;
// a stale disarm does not undo a newer Arm.
func TestArm(t *testing.T) {
	Hit("deliver") // nothing armed: no effect
	var seen []string
	disarm := Arm(func(p string) { seen = append(seen, p) })
	Hit("deliver")
	Hit("dsn")
	disarm()
	Hit("refresh")
	if len(seen) != 2 || seen[0] != "deliver" || seen[1] != "dsn" {
		t.Errorf("points seen = %v, want [deliver dsn]", seen)
	}
	var second int
	disarm2 := Arm(func(string) { second++ })
	disarm() // the first Arm's disarm, again
	Hit("deliver")
	disarm2()
	if second != 1 {
		t.Errorf("a stale disarm removed a newer Arm (hits %d, want 1)", second)
	}
}
