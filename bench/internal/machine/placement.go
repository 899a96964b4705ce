package machine

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Placement splits the CPUs this process may use between the upstream
// server and the local side. In a deployment the upstream (Office 365,
// Gmail) runs on someone else's machine, and relayd shares its host with
// the legacy client. On one small benchmark machine, letting the scheduler
// place all of them at will measures mostly where it happened to put them
// (the same direct FETCH varies by a third from run to run); giving the
// upstream server its own CPUs and the client and relayd the others models
// the deployment and makes runs repeatable. Both paths of a comparison run
// under the same placement.
type Placement struct {
	Upstream, Local unix.CPUSet
}

// Split gives the upstream the first half of the CPUs this process may use
// (at least one) and the local side the rest. It fails on one CPU.
func Split() (*Placement, error) {
	var all unix.CPUSet
	if err := unix.SchedGetaffinity(0, &all); err != nil {
		return nil, fmt.Errorf("reading CPU affinity: %w", err)
	}
	var cpus []int
	for i := 0; i < len(all)*64; i++ {
		if all.IsSet(i) {
			cpus = append(cpus, i)
		}
	}
	if len(cpus) < 2 {
		return nil, fmt.Errorf("splitting CPUs between upstream and local side needs 2, this process may use %d (run with -placement shared)", len(cpus))
	}
	p := &Placement{}
	for i, c := range cpus {
		if i < len(cpus)/2 {
			p.Upstream.Set(c)
		} else {
			p.Local.Set(c)
		}
	}
	return p, nil
}

// String reads "upstream on CPU 0, relayd and client on CPU 1".
func (p *Placement) String() string {
	return fmt.Sprintf("upstream on CPU %s, relayd and client on CPU %s", list(&p.Upstream), list(&p.Local))
}

func list(s *unix.CPUSet) string {
	var parts []string
	for i := 0; i < len(s)*64; i++ {
		if s.IsSet(i) {
			parts = append(parts, strconv.Itoa(i))
		}
	}
	return strings.Join(parts, ",")
}

// PinSelf moves every thread of this process to the local CPUs; threads
// created later inherit that. Processes started afterwards (relayd) do
// too.
func (p *Placement) PinSelf() error {
	// Threads can appear while the list is walked; walk until a pass
	// finds no thread it had not pinned.
	pinned := map[int]bool{}
	for {
		ents, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return err
		}
		fresh := false
		for _, e := range ents {
			tid, err := strconv.Atoi(e.Name())
			if err != nil || pinned[tid] {
				continue
			}
			if err := unix.SchedSetaffinity(tid, &p.Local); err != nil && err != unix.ESRCH {
				return fmt.Errorf("pinning thread %d: %w", tid, err)
			}
			pinned[tid] = true
			fresh = true
		}
		if !fresh {
			return nil
		}
	}
}

// StartUpstream runs start, which starts the upstream server's processes,
// on a thread pinned to the upstream CPUs, so that those processes and
// every process they fork inherit them. Afterwards this process's threads
// are on the local CPUs again.
func (p *Placement) StartUpstream(start func() error) error {
	err := func() error {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := unix.SchedSetaffinity(0, &p.Upstream); err != nil {
			return fmt.Errorf("pinning the upstream: %w", err)
		}
		defer unix.SchedSetaffinity(0, &p.Local)
		return start()
	}()
	// Threads the runtime created during start inherited the upstream
	// CPUs.
	if perr := p.PinSelf(); err == nil {
		err = perr
	}
	return err
}

// CPUTicks is each CPU's busy and total time from /proc/stat, in ticks.
type CPUTicks map[int][2]uint64

// ReadCPUTicks reads /proc/stat.
func ReadCPUTicks() CPUTicks {
	t := CPUTicks{}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return t
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 5 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		cpu, err := strconv.Atoi(f[0][3:])
		if err != nil {
			continue
		}
		var busy, total uint64
		for i, v := range f[1:] {
			n, _ := strconv.ParseUint(v, 10, 64)
			total += n
			if i != 3 && i != 4 { // idle, iowait
				busy += n
			}
		}
		t[cpu] = [2]uint64{busy, total}
	}
	return t
}

// Busy returns the share of time the CPUs in set were busy between t0 and
// t1, from 0 to 1.
func Busy(set *unix.CPUSet, t0, t1 CPUTicks) float64 {
	var busy, total uint64
	for cpu, v := range t1 {
		if set.IsSet(cpu) {
			busy += v[0] - t0[cpu][0]
			total += v[1] - t0[cpu][1]
		}
	}
	if total == 0 {
		return 0
	}
	return float64(busy) / float64(total)
}
