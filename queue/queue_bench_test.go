package queue

import (
	"fmt"
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
