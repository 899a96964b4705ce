package auth

import (
	"context"
	"sync"
	"testing"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// One refresh token, one access token per resource: Graph's and the mail
// protocols' are fetched and cached apart, each request names one
// resource (no AADSTS28000), requests run one at a time so that each
// starts from the refresh token the one before rotated (the fake IdP kills
// a used refresh token), and the rotated token is stored.
func TestTokensPerResource(t *testing.T) {
	idp := newIdP(t)
	graph := testkit.StartGraph(t, idp)
	a := testAccount(idp)
	a.Transport, a.GraphURL = "graph", graph.URL
	a.GraphScopes = []string{graph.Scope(), "offline_access"}
	src, store := newSource(t, idp, SourceOptions{Account: a})
	ctx := context.Background()

	var wg sync.WaitGroup
	var mail, gr [8]string
	var errs [16]error
	for i := range 8 {
		wg.Add(2)
		go func() { defer wg.Done(); mail[i], errs[i] = src.Token(ctx) }()
		go func() { defer wg.Done(); gr[i], errs[8+i] = src.TokenFor(ctx, ResourceGraph) }()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatalf("concurrent tokens: %v", err)
		}
	}
	if n := idp.Refreshes(); n != 2 {
		t.Errorf("%d refreshes for two resources, want 2", n)
	}
	if !idp.Validate(mail[0], a.Email) || idp.ValidateGraph(mail[0], graph.URL) != nil {
		t.Error("the mail token is not the mail protocols'")
	}
	if g := idp.ValidateGraph(gr[0], graph.URL); g == nil || len(g.Perms) != 1 || g.Perms[0] != "Mail.Send" {
		t.Errorf("the Graph token: %+v", g)
	}
	// Each is refreshed on its own: a rejected Graph token leaves the
	// mail token alone.
	g2, err := src.RefreshFor(ctx, ResourceGraph, gr[0])
	if err != nil || g2 == gr[0] {
		t.Fatalf("RefreshFor(graph) = %q, %v", g2, err)
	}
	if m, _ := src.Token(ctx); m != mail[0] {
		t.Error("refreshing Graph's token replaced the mail token")
	}
	stored, _ := store.Load("support")
	if _, err := (&Store{Dir: store.Dir}).Load("support"); err != nil || stored.RefreshToken == "" {
		t.Fatal(err)
	}
	// The Graph token is stored with the grant: a restart uses it without
	// a refresh, and the stored refresh token is the live one.
	src2, err := NewSource(SourceOptions{Account: a, Store: store})
	if err != nil {
		t.Fatal(err)
	}
	before := idp.Refreshes()
	kept, err := src2.TokenFor(ctx, ResourceGraph)
	if err != nil || kept != g2 || idp.Refreshes() != before {
		t.Fatalf("Graph token after a restart = %q, %v, %d refreshes; want the stored one without a refresh", kept, err, idp.Refreshes()-before)
	}
	if _, err := src2.RefreshFor(ctx, ResourceGraph, kept); err != nil {
		t.Fatalf("refresh with the stored refresh token: %v", err)
	}
	// A dead grant is every resource's: Graph's condition says reauthorize.
	idp.Revoke(a.Login)
	src3, _ := NewSource(SourceOptions{Account: a, Store: store})
	stale, _ := src3.TokenFor(ctx, ResourceGraph)
	_, err = src3.RefreshFor(ctx, ResourceGraph, stale)
	if c := src3.Health().Condition(health.SourceGraph); c == nil || c.State != health.StateNeedsReauth || err == nil {
		t.Errorf("revoked grant, Graph condition %v (err %v)", c, err)
	}
}
