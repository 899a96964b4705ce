package auth

import (
	"context"
	"sync"
	"testing"

	"github.com/relayd/relayd/internal/testkit"
)

// Forced refreshes of both resources, concurrently, many times, with a
// provider that kills a used refresh token: none starts from a refresh
// token the other already rotated (fetchMu is held until the outcome is
// stored).
func TestConcurrentResourceRefreshesKeepTheGrant(t *testing.T) {
	idp := newIdP(t)
	graph := testkit.StartGraph(t, idp)
	a := testAccount(idp)
	a.Transport, a.GraphURL = "graph", graph.URL
	a.GraphScopes = []string{graph.Scope(), "offline_access"}
	src, _ := newSource(t, idp, SourceOptions{Account: a})
	ctx := context.Background()
	m, _ := src.Token(ctx)
	g, _ := src.TokenFor(ctx, ResourceGraph)
	for i := range 300 {
		var wg sync.WaitGroup
		var e1, e2 error
		var m2, g2 string
		wg.Add(2)
		go func() { defer wg.Done(); m2, e1 = src.Refresh(ctx, m) }()
		go func() { defer wg.Done(); g2, e2 = src.RefreshFor(ctx, ResourceGraph, g) }()
		wg.Wait()
		if e1 != nil || e2 != nil {
			t.Fatalf("round %d: mail %v; graph %v", i, e1, e2)
		}
		m, g = m2, g2
	}
}
