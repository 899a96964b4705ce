package signin_test

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/signin"
)

// consoleRedirect stands for the web console's callback. The fake IdP
// accepts only loopback redirect URIs (as an app registered for them
// does), so it is one with a path; nothing listens there: the test reads
// the redirect from the IdP's answer.
const consoleRedirect = "http://127.0.0.1:8025" + config.WebCallbackPath

// tokenCounter counts the requests to the IdP's token endpoint.
type tokenCounter struct {
	n atomic.Int64
}

func (c *tokenCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.HasSuffix(r.URL.Path, "/token") {
		c.n.Add(1)
	}
	return http.DefaultTransport.RoundTrip(r)
}

// consoleSignIn is a SignIn as the web console makes one: no terminal,
// nothing to read or write; its token requests are counted.
func consoleSignIn(t *testing.T, idp *testkit.IdP) (*signin.SignIn, *tokenCounter) {
	tc := &tokenCounter{}
	return &signin.SignIn{Account: signInAccount(t, idp), HTTPClient: &http.Client{Transport: tc, Timeout: 10 * time.Second}}, tc
}

// authorize opens p.AuthURL as the browser does and returns the query of
// the redirect the IdP answers with.
func authorize(t *testing.T, p *signin.Pending) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(p.AuthURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || !strings.HasPrefix(loc, p.RedirectURI+"?") {
		t.Fatalf("the IdP answered %s, Location %q; want a redirect to %s", resp.Status, loc, p.RedirectURI)
	}
	u, err := url.Parse(loc)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

// Start builds the authorization request for any absolute redirect URI,
// the console's https one included, without contacting the IdP.
func TestStartAuthorizationRequest(t *testing.T) {
	idp := newIdP(t)
	s, tc := consoleSignIn(t, idp)
	const redirect = "https://console.example.test" + config.WebCallbackPath
	p, err := s.Start(redirect)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	u, err := url.Parse(p.AuthURL)
	if err != nil || !strings.HasPrefix(p.AuthURL, idp.AuthURL()+"?") {
		t.Fatalf("AuthURL = %q, want the IdP's authorization endpoint", p.AuthURL)
	}
	q := u.Query()
	for k, want := range map[string]string{"redirect_uri": redirect, "state": p.State, "response_type": "code",
		"code_challenge_method": "S256", "login_hint": "support@example.com", "client_id": "client"} {
		if q.Get(k) != want {
			t.Errorf("AuthURL's %s = %q, want %q", k, q.Get(k), want)
		}
	}
	if q.Get("code_challenge") == "" || q.Get("nonce") == "" || len(p.State) < 32 {
		t.Errorf("AuthURL %s: want a code_challenge, a nonce and a random state", p.AuthURL)
	}
	if p.RedirectURI != redirect {
		t.Errorf("RedirectURI = %q, want %q", p.RedirectURI, redirect)
	}
	if p2, _ := s.Start(redirect); p2 == nil || p2.State == p.State {
		t.Error("two sign-ins of one SignIn have the same state")
	}
	for _, bad := range []string{"/oauth/callback", "console.example.test/oauth/callback", "https://console.example.test/cb#x", ":"} {
		if _, err := s.Start(bad); err == nil || !strings.Contains(err.Error(), "not an absolute URL") {
			t.Errorf("Start(%q) = %v; want it refused", bad, err)
		}
	}
	if n := tc.n.Load(); n != 0 {
		t.Errorf("Start made %d token requests; want none", n)
	}
}

// Start, the browser, then Finish from another goroutine, as the console
// does: a grant for the account's login.
func TestStartFinish(t *testing.T) {
	idp := newIdP(t)
	s, _ := consoleSignIn(t, idp)
	p, err := s.Start(consoleRedirect)
	if err != nil {
		t.Fatalf("Start() = %v", err)
	}
	q := authorize(t, p)
	type result struct {
		g   *auth.Grant
		err error
	}
	done := make(chan result)
	go func() {
		g, err := p.Finish(context.Background(), q)
		done <- result{g, err}
	}()
	r := <-done
	if r.err != nil || r.g == nil {
		t.Fatalf("Finish() = %+v, %v", r.g, r.err)
	}
	if r.g.Subject != "support@example.com" || r.g.RefreshToken == "" || r.g.IDToken == "" || r.g.ClientID != "client" {
		t.Errorf("Finish() = %+v; want a grant of support@example.com with its refresh and ID tokens", r.g)
	}
}

// A query whose state is not the sign-in's is refused before anything is
// exchanged, and the sign-in still takes its own redirect.
func TestFinishRefusesOtherState(t *testing.T) {
	idp := newIdP(t)
	s, tc := consoleSignIn(t, idp)
	p, err := s.Start(consoleRedirect)
	if err != nil {
		t.Fatal(err)
	}
	q := authorize(t, p)
	for _, state := range []string{"", "wrong", p.State + "x", strings.ToUpper(p.State)} {
		forged := url.Values{"code": {q.Get("code")}}
		if state != "" {
			forged.Set("state", state)
		}
		g, err := p.Finish(context.Background(), forged)
		if g != nil || err == nil || !strings.Contains(err.Error(), "its state differs") || !strings.Contains(err.Error(), "nothing was stored") {
			t.Errorf("Finish(state %q) = %v, %v; want it refused", state, g, err)
		}
	}
	if n := tc.n.Load(); n != 0 {
		t.Fatalf("%d token requests for redirects of another state; want none", n)
	}
	if g, err := p.Finish(context.Background(), q); err != nil || g == nil {
		t.Fatalf("Finish() with the sign-in's own redirect = %v, %v", g, err)
	}
}

// A Pending takes one redirect: of two Finish with it, at once, one
// completes the sign-in and the other fails without contacting the IdP;
// so does a Finish after that.
func TestFinishOnce(t *testing.T) {
	idp := newIdP(t)
	s, tc := consoleSignIn(t, idp)
	p, err := s.Start(consoleRedirect)
	if err != nil {
		t.Fatal(err)
	}
	q := authorize(t, p)
	var wg sync.WaitGroup
	grants := make([]*auth.Grant, 2)
	errs := make([]error, 2)
	for i := range 2 {
		wg.Go(func() { grants[i], errs[i] = p.Finish(context.Background(), q) })
	}
	wg.Wait()
	if (grants[0] == nil) == (grants[1] == nil) {
		t.Fatalf("two Finish with one redirect = (%v, %v), (%v, %v); want one grant", grants[0], errs[0], grants[1], errs[1])
	}
	for i, err := range errs {
		if grants[i] == nil && (err == nil || !strings.Contains(err.Error(), "already took its redirect")) {
			t.Errorf("the second Finish = %v; want it refused as the sign-in's redirect was taken", err)
		}
	}
	if g, err := p.Finish(context.Background(), q); g != nil || err == nil || !strings.Contains(err.Error(), "already took its redirect") {
		t.Errorf("a third Finish = %v, %v; want it refused", g, err)
	}
	if n := tc.n.Load(); n != 1 {
		t.Errorf("%d token requests; want 1: the code is exchanged once", n)
	}
}

// error=access_denied in the redirect is explained, and ends the sign-in.
func TestFinishAccessDenied(t *testing.T) {
	idp := newIdP(t)
	idp.FailNextAuthorization("access_denied", "The user cancelled the sign-in.")
	s, tc := consoleSignIn(t, idp)
	p, err := s.Start(consoleRedirect)
	if err != nil {
		t.Fatal(err)
	}
	q := authorize(t, p)
	g, err := p.Finish(context.Background(), q)
	if g != nil || err == nil || !strings.Contains(err.Error(), "the sign-in was cancelled or access was denied (access_denied: The user cancelled the sign-in.)") ||
		!strings.Contains(err.Error(), "nothing was stored") {
		t.Errorf("Finish() = %v, %v; want access_denied explained", g, err)
	}
	if n := tc.n.Load(); n != 0 {
		t.Errorf("%d token requests; want none", n)
	}
	if _, err := p.Finish(context.Background(), q); err == nil || !strings.Contains(err.Error(), "already took its redirect") {
		t.Errorf("Finish() after the refusal = %v; want the sign-in over", err)
	}
}

// Someone else than the account's login signs in (a browser already
// signed in to another account): refused, naming who it was.
func TestFinishWrongPerson(t *testing.T) {
	idp := newIdP(t)
	idp.SignInAs("someone.else@example.com")
	s, _ := consoleSignIn(t, idp)
	p, err := s.Start(consoleRedirect)
	if err != nil {
		t.Fatal(err)
	}
	g, err := p.Finish(context.Background(), authorize(t, p))
	var wa *auth.WrongAccountError
	if g != nil || !errors.As(err, &wa) || wa.SignedIn != "someone.else@example.com" || wa.Expected != "support@example.com" {
		t.Fatalf("Finish() = %v, %v; want the sign-in as someone else refused", g, err)
	}
	if !strings.Contains(err.Error(), "the sign-in was as someone.else@example.com") || !strings.Contains(err.Error(), "nothing was stored") {
		t.Errorf("Finish() = %q; want who signed in named", err)
	}
}

// StartDevice prints nothing; Wait, from another goroutine, returns the
// grant once the person approved; a second Wait fails at once.
func TestStartDeviceWait(t *testing.T) {
	idp := newIdP(t)
	s, _ := consoleSignIn(t, idp)
	var out testkit.SyncBuffer
	s.Out = &out
	d, err := s.StartDevice(context.Background())
	if err != nil {
		t.Fatalf("StartDevice() = %v", err)
	}
	if d.UserCode == "" || d.VerificationURI != idp.URL+"/device" {
		t.Errorf("StartDevice() = code %q at %q; want a code at %s/device", d.UserCode, d.VerificationURI, idp.URL)
	}
	if left := time.Until(d.Expiry); left < 14*time.Minute || left > 15*time.Minute {
		t.Errorf("the code expires in %s; want the IdP's 15 minutes", left)
	}
	if out.String() != "" {
		t.Errorf("StartDevice printed %q; want nothing", out.String())
	}
	type result struct {
		g   *auth.Grant
		err error
	}
	done := make(chan result)
	go func() {
		g, err := d.Wait(context.Background())
		done <- result{g, err}
	}()
	if err := idp.ApproveDevice(d.UserCode, "support@example.com"); err != nil {
		t.Fatal(err)
	}
	var r result
	select {
	case r = <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Wait() did not return after the approval")
	}
	if r.err != nil || r.g == nil || r.g.Subject != "support@example.com" || r.g.RefreshToken == "" {
		t.Fatalf("Wait() = %+v, %v; want the grant", r.g, r.err)
	}
	if g, err := d.Wait(context.Background()); g != nil || err == nil || !strings.Contains(err.Error(), "waited for once") {
		t.Errorf("a second Wait() = %v, %v; want it refused", g, err)
	}
	if out.String() != "" {
		t.Errorf("the sign-in printed %q; want nothing", out.String())
	}
}

// StartDevice keeps Device's refusal of a provider without the device flow.
func TestStartDeviceNotAllowed(t *testing.T) {
	idp := newIdP(t)
	s, tc := consoleSignIn(t, idp)
	s.Account.DeviceFlow = false
	if d, err := s.StartDevice(context.Background()); d != nil || err == nil || !strings.Contains(err.Error(), "does not allow the device flow") {
		t.Errorf("StartDevice() = %v, %v; want the device flow refused", d, err)
	}
	if n := tc.n.Load(); n != 0 {
		t.Errorf("%d token requests; want none", n)
	}
}

func TestParsePasted(t *testing.T) {
	for _, tc := range []struct {
		name, text string
		code, err  string
	}{
		{"address", "http://127.0.0.1:8025/oauth/callback?code=c1&state=s1", "c1", ""},
		{"white space around", "  http://localhost:41234/?state=s1&code=c1\r\n", "c1", ""},
		{"error", "http://127.0.0.1:8025/?error=access_denied&state=s1", "", ""},
		{"no query", "http://127.0.0.1:8025/oauth/callback", "", "not the address the browser was sent to"},
		{"empty", "", "", "not the address the browser was sent to"},
		{"not a URL", "http://[::1%zz/?code=c1", "", "not the address the browser was sent to"},
		{"too long", "http://127.0.0.1/?code=" + strings.Repeat("x", 16<<10), "", "longer than 16 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := signin.ParsePasted(tc.text)
			if tc.err != "" {
				if q != nil || err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Errorf("ParsePasted() = %v, %v; want %q", q, err, tc.err)
				}
				return
			}
			if err != nil || q.Get("code") != tc.code || q.Get("state") != "s1" {
				t.Errorf("ParsePasted() = %v, %v; want code %q and state s1", q, err, tc.code)
			}
		})
	}
}
