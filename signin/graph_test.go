package signin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/signin"
)

// graphAccount signs in for IMAP/SMTP (scope "https://mail.example/..."
// names the mail resource) and sends through the fake Graph.
func graphAccount(t *testing.T, idp *testkit.IdP, graph *testkit.Graph) *config.Account {
	a := testkit.Account{Name: "support", Provider: "custom", Email: "support@example.com", ClientID: "client",
		TokenURL: idp.TokenURL(), AuthURL: idp.AuthURL(), DeviceAuthURL: idp.DeviceAuthURL(), Issuer: idp.IssuerURL(),
		Direction: "outgoing", LocalPasswordHash: testkit.UnusedHash,
		Transport: "graph", GraphURL: graph.URL}.Parsed(t)
	a.Scopes = []string{"https://outlook.example/SMTP.Send", "offline_access"}
	return a
}

// The browser flow of a Graph account asks one consent for the mail
// protocols and Mail.Send, redeems the code for the mail resource alone
// (both at once answer AADSTS28000), and the Graph token then comes from
// the same refresh token.
func TestBrowserConsentsToGraph(t *testing.T) {
	idp := newIdP(t)
	graph := testkit.StartGraph(t, idp)
	a := graphAccount(t, idp, graph)
	var out testkit.SyncBuffer
	inR, inW := io.Pipe()
	defer inW.Close()
	s := &signin.SignIn{Account: a, Out: &out, In: inR}
	done := make(chan struct{})
	var g *auth.Grant
	var err error
	go func() { g, err = s.Browser(context.Background()); close(done) }()
	waitOutput(t, &out, "paste it here", done)
	authURL := regexp.MustCompile(`(?m)^\s+(http://\S+/authorize\?\S+)`).FindStringSubmatch(out.String())[1]
	u, _ := url.Parse(authURL)
	if scope := u.Query().Get("scope"); !strings.Contains(scope, graph.Scope()) || !strings.Contains(scope, "SMTP.Send") {
		t.Errorf("authorization request scope %q: want SMTP.Send and %s in one consent", scope, graph.Scope())
	}
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, herr := c.Get(authURL)
	if herr != nil {
		t.Fatal(herr)
	}
	resp.Body.Close()
	fmt.Fprintln(inW, resp.Header.Get("Location"))
	<-done
	if err != nil {
		t.Fatalf("Browser() = %v", err)
	}
	src, serr := auth.NewSource(auth.SourceOptions{Account: a, Store: &auth.Store{Dir: t.TempDir()}})
	if serr != nil {
		t.Fatal(serr)
	}
	if err := src.Install(g); err != nil {
		t.Fatal(err)
	}
	gt, err := src.TokenFor(context.Background(), auth.ResourceGraph)
	if err != nil {
		t.Fatalf("Graph token from the browser grant: %v", err)
	}
	if idp.ValidateGraph(gt, graph.URL) == nil {
		t.Error("the Graph token is not for Graph")
	}
}

// The device flow cannot name Graph beside the mail resource (the token
// step would fail with AADSTS28000): it asks for the mail scopes alone,
// and a Graph token needs consent given beforehand by an admin.
func TestDeviceLeavesGraphToAdminConsent(t *testing.T) {
	idp := newIdP(t)
	graph := testkit.StartGraph(t, idp)
	a := graphAccount(t, idp, graph)
	idp.WithholdConsent(graph.Scope())
	var out testkit.SyncBuffer
	s := &signin.SignIn{Account: a, Out: &out}
	done := make(chan struct{})
	var g *auth.Grant
	var err error
	go func() { g, err = s.Device(context.Background()); close(done) }()
	waitOutput(t, &out, "enter the code", done)
	code := regexp.MustCompile(`enter the code\s+(\S+)`).FindStringSubmatch(out.String())[1]
	idp.ApproveDevice(code, "support@example.com")
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("device sign-in did not end")
	}
	if err != nil {
		t.Fatalf("Device() = %v", err)
	}
	src, _ := auth.NewSource(auth.SourceOptions{Account: a, Store: &auth.Store{Dir: t.TempDir()}})
	if err := src.Install(g); err != nil {
		t.Fatal(err)
	}
	_, err = src.TokenFor(context.Background(), auth.ResourceGraph)
	if he := health.AsError(err); he == nil || he.State != health.StateNeedsAdmin || !strings.Contains(he.Advice, "Mail.Send") {
		t.Fatalf("Graph token without admin consent: %v", err)
	}
	idp.GiveConsent(graph.Scope())
	if _, err := src.RefreshFor(context.Background(), auth.ResourceGraph, ""); err != nil {
		t.Fatalf("after admin consent: %v", err)
	}
}
