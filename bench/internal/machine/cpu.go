package machine

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// CPUSeconds is the user plus system CPU time process pid has used.
func CPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

// SelfCPU is the user plus system CPU time this process has used.
func SelfCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}

// TreeCPU is the CPU time process pid, its live descendants and the
// children it has reaped have used: for a server that forks workers
// (Postfix's master and its smtpd, cleanup, ...), whose exited workers'
// time the master's cutime and cstime keep.
func TreeCPU(pid int) float64 {
	type proc struct {
		ppid  int
		ticks float64 // utime+stime, plus cutime+cstime
	}
	procs := map[int]proc{}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			continue
		}
		f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
		ppid, _ := strconv.Atoi(f[1])
		var t float64
		for _, i := range []int{11, 12, 13, 14} {
			v, _ := strconv.ParseFloat(f[i], 64)
			t += v
		}
		procs[p] = proc{ppid, t}
	}
	var sum func(int) float64
	sum = func(p int) float64 {
		t := procs[p].ticks
		for c, pr := range procs {
			if pr.ppid == p {
				t += sum(c)
			}
		}
		return t
	}
	return sum(pid) / 100 // USER_HZ
}
