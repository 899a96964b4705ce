package proxy

import (
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"testing"
	"time"
)

// TestIdleSessionHeap holds idle (IDLE) sessions through relayd to the
// fake upstream over TLS and writes a heap profile of what they hold, for
// finding where an idle session's memory goes:
//
//	RELAYD_IDLE_HEAP=/tmp/idle.heap go test -run IdleSessionHeap ./proxy
//	go tool pprof -sample_index=inuse_space -top proxy.test /tmp/idle.heap
//
// The profile holds the fake upstream's and the clients' memory too; the
// relayd part is under proxy's functions and crypto/tls's client side.
func TestIdleSessionHeap(t *testing.T) {
	out := os.Getenv("RELAYD_IDLE_HEAP")
	if out == "" {
		t.Skip("set RELAYD_IDLE_HEAP to a file for the heap profile")
	}
	old := runtime.MemProfileRate
	runtime.MemProfileRate = 1 // every allocation
	defer func() { runtime.MemProfileRate = old }()
	r := newTestRelay(t, relayOpts{tls: true})
	const n = 200
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	g0 := runtime.NumGoroutine()
	for i := 0; i < n; i++ {
		rw := r.raw()
		rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
		rw.until("a OK")
		rw.send("b SELECT INBOX\r\n")
		rw.until("b OK")
		rw.send("c IDLE\r\n")
		if l := rw.line(); !strings.HasPrefix(l, "+") {
			t.Fatalf("IDLE: %q", l)
		}
		rw.c.SetDeadline(time.Time{})
	}
	waitParked(t, 2*n)
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&ms1)
	t.Logf("%d sessions (with the fake upstream's and the clients' share): heap in use %.1f KB, stacks %.1f KB, goroutines %.1f per session",
		n, float64(ms1.HeapInuse-ms0.HeapInuse)/1024/n, float64(ms1.StackInuse-ms0.StackInuse)/1024/n, float64(runtime.NumGoroutine()-g0)/n)
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}
