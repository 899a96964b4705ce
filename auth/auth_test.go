package auth

import (
	"context"
	"encoding/base64"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

func newIdP(t *testing.T) *testkit.IdP {
	t.Helper()
	return testkit.StartIdP(t)
}

func testAccount(idp *testkit.IdP) *config.Account {
	return testkit.Account{
		Name: "support", Provider: "custom", Email: "support@example.com", ClientID: "client", TokenURL: idp.TokenURL(),
		Direction: "outgoing", SMTPServer: "127.0.0.1:587", LocalPasswordHash: testkit.UnusedHash,
	}.Parsed(tbNop{})
}

// tbNop is a testkit.TB for helpers called outside a test's goroutine.
type tbNop struct{}

func (tbNop) Helper()           {}
func (tbNop) Fatal(args ...any) { panic(fmt.Sprint(args...)) }
func (tbNop) Cleanup(func())    {}

// newSource stores a fresh grant for the account and returns its source.
func newSource(t testing.TB, idp *testkit.IdP, opts SourceOptions) (*Source, *Store) {
	t.Helper()
	store := &Store{Dir: t.TempDir()}
	if opts.Account == nil {
		opts.Account = testAccount(idp)
	}
	rt := idp.IssueRefreshToken("client", opts.Account.Login)
	if err := store.Save(opts.Account.Name, &Grant{RefreshToken: rt, GrantedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	opts.Store = store
	src, err := NewSource(opts)
	if err != nil {
		t.Fatalf("NewSource() = %v", err)
	}
	return src, store
}

func TestXOAUTH2Response(t *testing.T) {
	got := base64.StdEncoding.EncodeToString(XOAUTH2Response("someuser@example.com", "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg"))
	// The example from Google's XOAUTH2 documentation.
	want := "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
	if got != want {
		t.Errorf("XOAUTH2Response = %s, want %s", got, want)
	}
}

func TestXOAUTH2ClientErrorChallenge(t *testing.T) {
	c := NewXOAUTH2Client("u@example.com", "tok")
	mech, ir, err := c.Start()
	if mech != "XOAUTH2" || err != nil || string(ir) != "user=u@example.com\x01auth=Bearer tok\x01\x01" {
		t.Fatalf("Start() = %q %q %v", mech, ir, err)
	}
	// The JSON error challenge is answered with an empty, non-nil response.
	resp, err := c.Next([]byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`))
	if err != nil || resp == nil || len(resp) != 0 {
		t.Fatalf("Next(error challenge) = %q (nil=%v), %v; want empty non-nil response", resp, resp == nil, err)
	}
	// A second challenge is a protocol violation.
	if _, err := c.Next([]byte("again")); err == nil {
		t.Error("Next(second challenge) = nil error, want an error")
	}
}

func TestRefreshRotationPersisted(t *testing.T) {
	idp := newIdP(t)
	src, store := newSource(t, idp, SourceOptions{})
	before, _ := store.Load("support")
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatalf("Token() = %v", err)
	}
	after, err := store.Load("support")
	if err != nil {
		t.Fatal(err)
	}
	if after.RefreshToken == before.RefreshToken {
		t.Fatal("rotated refresh token was not persisted")
	}
	if after.AccessToken != tok || after.RefreshedAt.IsZero() {
		t.Errorf("stored grant = %+v", after)
	}
	// The old refresh token is dead at the IdP: only the stored one works.
	src2, err := NewSource(SourceOptions{Account: testAccount(idp), Store: store, RefreshMargin: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src2.Token(context.Background()); err != nil {
		t.Fatalf("Token() with the persisted refresh token = %v", err)
	}
	fi, err := os.Stat(filepath.Join(store.Dir, "support.json"))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("grant file mode = %v, %v; want 0600", fi.Mode(), err)
	}
}

func TestConcurrentRefreshIsOneRequest(t *testing.T) {
	idp := newIdP(t)
	src, _ := newSource(t, idp, SourceOptions{})
	var wg sync.WaitGroup
	toks := make([]string, 50)
	errs := make([]error, 50)
	for i := range toks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			toks[i], errs[i] = src.Token(context.Background())
		}()
	}
	wg.Wait()
	for i := range toks {
		if errs[i] != nil || toks[i] != toks[0] {
			t.Fatalf("Token() #%d = %q, %v; want %q", i, toks[i], errs[i], toks[0])
		}
	}
	if n := idp.Refreshes(); n != 1 {
		t.Errorf("IdP saw %d refreshes, want 1", n)
	}
}

func TestProactiveRefresh(t *testing.T) {
	idp := newIdP(t)
	now := time.Now()
	src, _ := newSource(t, idp, SourceOptions{Now: func() time.Time { return now }})
	first, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(45 * time.Minute) // 15 minutes left: still good
	if tok, _ := src.Token(context.Background()); tok != first || idp.Refreshes() != 1 {
		t.Errorf("token with 15m left was refreshed (%d refreshes)", idp.Refreshes())
	}
	now = now.Add(6 * time.Minute) // 9 minutes left: refresh first
	if tok, _ := src.Token(context.Background()); tok == first || idp.Refreshes() != 2 {
		t.Errorf("token with 9m left was not refreshed (%d refreshes)", idp.Refreshes())
	}
}

func TestRevokedGrantNeedsReauth(t *testing.T) {
	idp := newIdP(t)
	src, _ := newSource(t, idp, SourceOptions{})
	idp.Revoke("support@example.com")
	_, err := src.Token(context.Background())
	if he := health.AsError(err); he == nil || he.State != health.StateNeedsReauth || he.Reason != "grant_expired_idle" {
		t.Fatalf("Token() = %v, want needs_reauth (grant_expired_idle)", err)
	}
	st := src.Health().Snapshot()
	if st.State != health.StateNeedsReauth || !strings.Contains(st.Advice, "relayd authorize support") ||
		!strings.Contains(st.LastError, "invalid_grant") || !strings.Contains(st.LastError, "AADSTS70008") {
		t.Errorf("Status() = %+v", st)
	}
}

func TestExpiredClientSecretNeedsAdmin(t *testing.T) {
	idp := newIdP(t)
	src, _ := newSource(t, idp, SourceOptions{})
	idp.ExpireClientSecret("client")
	_, err := src.Token(context.Background())
	if ae := health.AsError(err); ae == nil || ae.State != health.StateNeedsAdmin || ae.Reason != health.ReasonClientSecretExpired ||
		!strings.Contains(ae.Advice, "AADSTS7000222") || strings.Contains(ae.Client, "client") && strings.Contains(ae.Client, "secret") {
		t.Fatalf("Token() = %v, want needs_admin naming AADSTS7000222", err)
	}
}

func TestNoGrantNeedsReauth(t *testing.T) {
	idp := newIdP(t)
	src, err := NewSource(SourceOptions{Account: testAccount(idp), Store: &Store{Dir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if st := src.Health().Snapshot(); st.State != health.StateNeedsReauth || !strings.Contains(st.Advice, "relayd authorize support") {
		t.Errorf("Status() = %+v", st)
	}
	if _, err := src.Token(context.Background()); err == nil {
		t.Error("Token() without a grant = nil error")
	}
	if idp.Refreshes() != 0 {
		t.Errorf("refresh attempted without a refresh token")
	}
}

// A grant installed while a refresh of the old grant is running wins.
func TestInstallBeatsRunningRefresh(t *testing.T) {
	idp := newIdP(t)
	gate := make(chan struct{})
	entered := make(chan struct{}, 1)
	hc := testkit.GatedClient(entered, gate)
	src, store := newSource(t, idp, SourceOptions{HTTPClient: hc})
	done := make(chan string)
	go func() {
		tok, _ := src.Token(context.Background())
		done <- tok
	}()
	<-entered // the refresh of the old grant is at the IdP
	fresh := &Grant{AccessToken: "at-new", RefreshToken: "rt-new", Expiry: time.Now().Add(time.Hour), GrantedAt: time.Now()}
	if err := src.Install(fresh); err != nil {
		t.Fatal(err)
	}
	close(gate)
	if tok := <-done; tok != "at-new" {
		t.Errorf("Token() during Install = %q, want the installed token", tok)
	}
	g, _ := store.Load("support")
	if g.RefreshToken != "rt-new" {
		t.Errorf("stored refresh token = %q, want the installed one", g.RefreshToken)
	}
	if tok, _ := src.Token(context.Background()); tok != "at-new" {
		t.Errorf("Token() after = %q, want at-new", tok)
	}
}

func TestClientCredentials(t *testing.T) {
	idp := newIdP(t)
	idp.AddClient("app", "s3cret")
	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte("s3cret\n"), 0o600)
	a := testAccount(idp)
	a.ClientID, a.ClientSecretFile, a.Grant = "app", secretFile, config.GrantClientCredentials
	src, err := NewSource(SourceOptions{Account: a, Store: &Store{Dir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	tok, err := src.Token(context.Background())
	if err != nil || tok == "" {
		t.Fatalf("Token() = %q, %v", tok, err)
	}
	idp.GrantApp("app", "support@example.com")
	if !idp.Validate(tok, "support@example.com") {
		t.Error("app token not valid for the granted mailbox")
	}
}

func TestImportRefreshToken(t *testing.T) {
	idp := newIdP(t)
	a := testAccount(idp)
	rt := idp.IssueRefreshToken("client", a.Login)
	g, err := ImportRefreshToken(context.Background(), a, nil, rt)
	if err != nil {
		t.Fatalf("ImportRefreshToken() = %v", err)
	}
	if g.AccessToken == "" || g.RefreshToken == rt || g.ClientID != "client" {
		t.Errorf("grant = %+v; want a validated, rotated grant", g)
	}
	// A token issued to another client is refused with an explanation.
	idp.AddClient("other", "")
	foreign := idp.IssueRefreshToken("other", a.Login)
	_, err = ImportRefreshToken(context.Background(), a, nil, foreign)
	if err == nil || !strings.Contains(err.Error(), "issued to another client id") {
		t.Errorf("ImportRefreshToken(foreign) = %v", err)
	}
	if err != nil && strings.Contains(err.Error(), foreign) {
		t.Error("error text contains the refresh token")
	}
}

// countingClient signals every token request on ch.
func countingClient(ch chan<- struct{}) *http.Client {
	return &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp, err := http.DefaultTransport.RoundTrip(r)
		select {
		case ch <- struct{}{}:
		default:
		}
		return resp, err
	})}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// Run refreshes a grant nobody uses, so that it does not expire unused.
func TestRunKeepsGrantAlive(t *testing.T) {
	idp := newIdP(t)
	requests := make(chan struct{}, 16)
	src, store := newSource(t, idp, SourceOptions{HTTPClient: countingClient(requests), KeepAlive: 50 * time.Millisecond})
	tok, err := src.Token(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	<-requests
	first, _ := store.Load("support")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	select {
	case <-requests:
	case <-time.After(10 * time.Second):
		t.Fatal("no keep-alive refresh within 10s")
	}
	// Join the keep-alive refresh (or see its result): a refresh for the
	// old token returns once the new grant is stored.
	if newTok, err := src.Refresh(context.Background(), tok); err != nil || newTok == tok {
		t.Fatalf("Refresh() = %q, %v; want the keep-alive's new token", newTok, err)
	}
	if g, _ := store.Load("support"); g.RefreshToken == first.RefreshToken {
		t.Error("keep-alive refresh not stored")
	}
}
