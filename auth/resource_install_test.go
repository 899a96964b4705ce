package auth

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// graphGate holds the first Graph token request until block is closed.
type graphGate struct {
	block   chan struct{}
	started chan struct{}
	once    sync.Once
}

func (g *graphGate) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		b, _ := io.ReadAll(r.Body)
		r.Body = io.NopCloser(strings.NewReader(string(b)))
		if strings.Contains(string(b), "Mail.Send") {
			g.once.Do(func() { close(g.started) })
			<-g.block
		}
	}
	return http.DefaultTransport.RoundTrip(r)
}

// A Graph refresh of the old (revoked) grant is in flight when relayd
// authorize installs a new grant: its answer is dropped and the request
// made again for the new grant, so the account stays ok.
func TestInstallDuringGraphRefresh(t *testing.T) {
	idp := newIdP(t)
	graph := testkit.StartGraph(t, idp)
	a := testAccount(idp)
	a.Transport, a.GraphURL = "graph", graph.URL
	a.GraphScopes = []string{graph.Scope(), "offline_access"}
	g := &graphGate{block: make(chan struct{}), started: make(chan struct{})}
	src, _ := newSource(t, idp, SourceOptions{Account: a, HTTPClient: &http.Client{Transport: g, Timeout: 10 * time.Second}})
	idp.Revoke(a.Email)
	done := make(chan error)
	go func() { _, err := src.TokenFor(context.Background(), ResourceGraph); done <- err }()
	<-g.started
	ng := &Grant{RefreshToken: idp.IssueRefreshToken("client", a.Email), GrantedAt: time.Now()}
	// Install directly (Adopt would refresh through the gate too, which does not block mail scopes).
	if err := src.Adopt(context.Background(), ng); err != nil {
		t.Fatal(err)
	}
	if st := src.Health().State(); st != health.StateOK {
		t.Fatalf("after the new grant: %s", st)
	}
	close(g.block)
	err := <-done
	t.Logf("in-flight graph refresh returned: %v", err)
	if c := src.Health().Condition(health.SourceGraph); c != nil {
		t.Errorf("after a fresh grant was installed, the account has Graph condition %s (%s)", c.State, c.Reason)
	}
}
