package auth

import (
	"context"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
)

// RefreshAhead fetches a token before a login needs it, shares the refresh
// with a login that needs one meanwhile, and starts nothing while the token
// endpoint fails (Run probes it then).
func TestRefreshAhead(t *testing.T) {
	idp := newIdP(t)
	// The fake IdP's tokens live an hour; a 50-minute margin makes a
	// fresh token "due" ahead of time without a fake clock.
	src, _ := newSource(t, idp, SourceOptions{RefreshMargin: 50 * time.Minute})

	done, _ := src.RefreshAhead(5 * time.Minute) // no access token yet
	if done == nil {
		t.Fatal("RefreshAhead() without a token started nothing")
	}
	<-done
	tok, err := src.Token(context.Background())
	if err != nil || idp.Refreshes() != 1 {
		t.Fatalf("Token() after RefreshAhead = %v, %d refreshes; want the token fetched ahead, 1 refresh", err, idp.Refreshes())
	}

	done, at := src.RefreshAhead(5 * time.Minute) // 60 min left > 50 + 5
	if done != nil {
		t.Fatal("RefreshAhead() refreshed a token with an hour left")
	}
	if d := time.Until(at); d < 4*time.Minute || d > 5*time.Minute {
		t.Errorf("next RefreshAhead due in %v, want about 5m", d)
	}

	done, _ = src.RefreshAhead(15 * time.Minute) // 60 min left < 50 + 15
	if done == nil {
		t.Fatal("RefreshAhead() did not refresh a token inside its window")
	}
	// A login whose token the upstream just refused joins that refresh.
	fresh, err := src.Refresh(context.Background(), tok)
	<-done
	if err != nil || fresh == tok || idp.Refreshes() != 2 {
		t.Errorf("Refresh() during RefreshAhead = %v, new token %v, %d refreshes; want 2 in all", err, fresh != tok, idp.Refreshes())
	}

	idp.SetDown(true)
	if _, err := src.Refresh(context.Background(), fresh); err == nil {
		t.Fatal("Refresh() with the IdP down = nil")
	}
	if st := src.Health().State(); st != health.StateDegraded {
		t.Fatalf("state = %s, want degraded", st)
	}
	if done, _ := src.RefreshAhead(15 * time.Minute); done != nil {
		t.Error("RefreshAhead() started a refresh while the token endpoint fails")
	}
}
