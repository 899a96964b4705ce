package auth

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// An outgoing-only Graph account in daily use for 85 days is not warned
// of a grant predicted to end after 90 days without use: a Graph refresh
// is a use of the grant.
func TestGraphOnlyAccountForecast(t *testing.T) {
	idp := newIdP(t)
	graph := testkit.StartGraph(t, idp)
	a := testAccount(idp)
	a.Transport, a.GraphURL = "graph", graph.URL
	a.GraphScopes = []string{graph.Scope(), "offline_access"}
	a.IdleLifetime = 90 * 24 * time.Hour
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	h := health.New("support", health.Options{WarnBefore: 10 * 24 * time.Hour, Now: clock})
	src, _ := newSource(t, idp, SourceOptions{Account: a, Now: clock, Health: h})
	src.Token(context.Background()) // the daemon's first mail refresh
	for day := 0; day < 85; day++ {
		mu.Lock()
		now = now.Add(24 * time.Hour)
		mu.Unlock()
		if _, err := src.TokenFor(context.Background(), ResourceGraph); err != nil {
			t.Fatal(err)
		}
	}
	h.Evaluate()
	s := h.Snapshot()
	t.Logf("after 85 days of daily Graph sends: state %s, advice %q, last refresh %s", s.State, s.Advice, src.Status().LastRefresh.Format(time.RFC3339))
	if s.State == health.StateWarning {
		t.Errorf("false 'grant expires soon' warning on a grant refreshed daily through Graph")
	}
}
