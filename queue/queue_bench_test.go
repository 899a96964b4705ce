package queue

import (
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
)

// BenchmarkDue measures the scheduling decision every submission wakes an
// account's worker for, with a backlog of 10,000 messages: in another
// account, in the account itself while it is held (a dead grant), and in
// the account itself waiting for retries. go test -bench Due ./queue
func BenchmarkDue(b *testing.B) {
	const backlog = 10000
	now := time.Now()
	for _, tc := range []struct {
		name string
		// owner of the backlog; "busy" is the account measured.
		owner string
		held  bool
	}{
		{"backlog-in-other-account", "other", false},
		{"own-backlog-held", "busy", true},
		{"own-backlog-deferred", "busy", false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			q, err := Open(Options{Dir: b.TempDir(), Accounts: func(string) *auth.Account { return nil }, Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			for i := 0; i < backlog; i++ {
				q.add(&Entry{ID: fmt.Sprintf("%s-%05d", newID(now), i), Account: tc.owner, State: StateQueued, NextAttempt: now.Add(time.Hour)})
			}
			a := q.account("busy")
			h := q.health(a)
			if tc.held {
				h.Fail(health.SourceToken, &health.Error{State: health.StateNeedsReauth, Reason: health.ReasonGrantRevoked})
				h.ReviewHold(true)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if ids, _ := q.due(a, h); len(ids) != 0 {
					b.Fatalf("due = %v, want nothing", ids)
				}
			}
		})
	}
}

// BenchmarkSpoolPut measures durable puts of 10 KB messages from 8
// goroutines, as 8 SMTP clients make them, in the directory
// RELAYD_BENCH_DIR (default: the test's temporary directory); with a
// spool on a fast-fsync disk it shows what the spool alone allows:
//
//	RELAYD_BENCH_DIR=/mnt/fastfs go test -run - -bench SpoolPut ./queue
func BenchmarkSpoolPut(b *testing.B) {
	dir := b.TempDir()
	if d := os.Getenv("RELAYD_BENCH_DIR"); d != "" {
		var err error
		if dir, err = os.MkdirTemp(d, "spoolput-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	sp, err := OpenSpool(dir, nil)
	if err != nil {
		b.Fatal(err)
	}
	defer sp.Close()
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", 128)
	const writers = 8
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				now := time.Now()
				e := &Entry{ID: newID(now), Account: "a", From: "a@example.com", Created: now, State: StateQueued,
					Recipients: []Recipient{{Addr: "b@example.net", State: RcptPending}}}
				if err := sp.Put(e, strings.NewReader(body)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msg/s")
}
