package signin

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/mdp/qrterminal/v3"
	"golang.org/x/oauth2"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/provider"
)

// SignIn runs an interactive sign-in for one account: the device flow
// (RFC 8628) or the authorization code flow with PKCE (RFC 7636). Either
// way the ID token must name the account's login (auth.CheckIdentity)
// before a grant is returned; nothing is stored here: the caller hands the
// grant to the daemon or the token store.
//
// Device and Browser run a whole sign-in from a terminal: they write to Out
// and read In, so a SignIn runs one of them at a time. A caller without a
// terminal (the web console) uses the parts they are built on: StartDevice
// then DeviceCode.Wait, or Start, its own redirect endpoint, then
// Pending.Finish. These neither change the SignIn nor use In, and the
// Pending or DeviceCode they return may be finished from another goroutine
// than the one that started it, once. The SignIn's fields must not change
// while a sign-in it started is under way.
type SignIn struct {
	Account *config.Account
	// HTTPClient talks to the IdP. Default: a client with a 30 s timeout.
	HTTPClient *http.Client
	// Out is where the person reads instructions; In where they may paste
	// the final URL of the browser flow (nil: nowhere).
	Out io.Writer
	In  io.Reader
	// Terminal: Out is a terminal, so a QR code and a live countdown are
	// shown. Otherwise a plain line every Progress (default 30 s).
	Terminal bool
	Progress time.Duration
	// SSHTarget is "user@host" for the ssh -L line of the browser flow.
	SSHTarget string
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// defaultClient is the HTTPClient of a SignIn without one.
var defaultClient = &http.Client{Timeout: 30 * time.Second}

// The fields' values, defaults applied. They leave the SignIn as it is, so
// that sign-ins it started may be finished from other goroutines.

func (s *SignIn) client() *http.Client {
	if s.HTTPClient != nil {
		return s.HTTPClient
	}
	return defaultClient
}

func (s *SignIn) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *SignIn) out() io.Writer {
	if s.Out != nil {
		return s.Out
	}
	return io.Discard
}

func (s *SignIn) progress() time.Duration {
	if s.Progress > 0 {
		return s.Progress
	}
	return 30 * time.Second
}

// config is the OAuth client of an interactive grant: the account's scopes
// and those that get an ID token.
func (s *SignIn) config() (*oauth2.Config, error) {
	secret, err := auth.ClientSecret(s.Account)
	if err != nil {
		return nil, err
	}
	oc := auth.OAuthConfig(s.Account, secret)
	oc.Scopes = slices.Clone(oc.Scopes)
	for _, sc := range provider.IdentityScopes {
		if !slices.Contains(oc.Scopes, sc) {
			oc.Scopes = append(oc.Scopes, sc)
		}
	}
	return oc, nil
}

// graphConsent is oc with, for an account that sends through Microsoft
// Graph, Graph's permissions (Mail.Send) among the scopes: the
// authorization request may name several resources, so that one consent
// screen covers IMAP, SMTP and Graph. The device flow cannot (Entra
// accepts both at /devicecode, then fails the token step with
// AADSTS28000): it relies on an admin's consent for Mail.Send.
func graphConsent(a *config.Account, oc *oauth2.Config) *oauth2.Config {
	if !a.Graph() || a.AppOnly() {
		return oc
	}
	c := *oc
	c.Scopes = slices.Clone(oc.Scopes)
	for _, sc := range a.GraphScopes {
		if !slices.Contains(c.Scopes, sc) {
			c.Scopes = append(c.Scopes, sc)
		}
	}
	return &c
}

// DeviceCode is a device-flow sign-in (RFC 8628) started and waiting for
// the person: they open VerificationURI and enter UserCode before Expiry.
// Wait completes it, once, from any goroutine.
type DeviceCode struct {
	// UserCode and VerificationURI are the IdP's text, on one line and
	// clipped (safetext.Clip); VerificationURI is not checked to be an
	// http(s) address.
	UserCode        string
	VerificationURI string
	// Expiry is when the code expires (the IdP's expires_in, else 15
	// minutes after StartDevice).
	Expiry time.Time

	s     *SignIn
	oc    *oauth2.Config
	da    *oauth2.DeviceAuthResponse
	taken atomic.Bool // Wait was called
}

// StartDevice asks the IdP for a device code. Nothing is printed: Device
// shows the code, or the caller does.
func (s *SignIn) StartDevice(ctx context.Context) (*DeviceCode, error) {
	a := s.Account
	if a.DeviceAuthURL == "" || !a.DeviceFlow {
		return nil, fmt.Errorf("account %q: provider %q does not allow the device flow for mail; run 'relayd authorize %s --browser'", a.Name, a.Provider, a.Name)
	}
	oc, err := s.config()
	if err != nil {
		return nil, err
	}
	da, err := oc.DeviceAuth(context.WithValue(ctx, oauth2.HTTPClient, s.client()))
	if ue := auth.Unreachable(a, err); ue != nil {
		return nil, fmt.Errorf("account %q: %w; nothing was stored", a.Name, ue)
	}
	if err != nil {
		return nil, fmt.Errorf("account %q: the device authorization endpoint did not start a sign-in: %s%s", a.Name, auth.Describe(err), explain(a, err))
	}
	if da.Expiry.IsZero() {
		da.Expiry = s.now().Add(15 * time.Minute)
	}
	// The IdP's text: shown on a terminal.
	da.VerificationURI, da.UserCode = safetext.Clip(da.VerificationURI, 200), safetext.Clip(da.UserCode, 100)
	return &DeviceCode{UserCode: da.UserCode, VerificationURI: da.VerificationURI, Expiry: da.Expiry, s: s, oc: oc, da: da}, nil
}

// Wait polls the IdP until the person approved or declined, or the code
// expired, then checks that the ID token names the account's login and
// returns the grant; it stores nothing. Each time the IdP cannot be
// reached, a line says so on the SignIn's Out (if any) and polling goes
// on. A DeviceCode is waited for once: a second Wait fails at once.
func (d *DeviceCode) Wait(ctx context.Context) (*auth.Grant, error) {
	a := d.s.Account
	if !d.taken.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("account %q: this device code is already being waited for or was used (each is waited for once); nothing was stored", a.Name)
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, d.s.client())
	tok, err := d.poll(ctx)
	if err != nil {
		return nil, err
	}
	return d.s.finish(ctx, tok, "")
}

// Device signs in with the device flow: StartDevice, the code, address, QR
// code and countdown on Out, then Wait.
func (s *SignIn) Device(ctx context.Context) (*auth.Grant, error) {
	d, err := s.StartDevice(ctx)
	if err != nil {
		return nil, err
	}
	a, out := s.Account, s.out()
	fmt.Fprintf(out, "To sign in as %s for account %q:\n\n  1. open  %s\n  2. enter the code  %s\n\n", a.Login, a.Name, d.VerificationURI, d.UserCode)
	if s.Terminal {
		qrterminal.GenerateHalfBlock(d.VerificationURI, qrterminal.L, out)
		fmt.Fprintln(out)
	}
	stop := s.countdown(d.Expiry)
	defer stop()
	return d.Wait(ctx)
}

// poll waits for the person to sign in. x/oauth2's DeviceAccessToken
// handles authorization_pending and slow_down (+5 s, RFC 8628 §3.5) but
// returns on the first network error; here a network error is not the end,
// and polling goes on with the same code until it expires. A request that
// timed out (the HTTP client's 30 s) is such an error: only the code's own
// expiry ends the wait.
func (d *DeviceCode) poll(ctx context.Context) (*oauth2.Token, error) {
	s, a, da := d.s, d.s.Account, d.da
	codeCtx, cancel := context.WithDeadline(ctx, da.Expiry)
	defer cancel()
	for {
		tok, err := d.oc.DeviceAccessToken(codeCtx, da)
		if err == nil {
			return tok, nil
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("account %q: interrupted; nothing was stored", a.Name)
		}
		var re *oauth2.RetrieveError
		if errors.As(err, &re) {
			return nil, deviceError(a, re)
		}
		if codeCtx.Err() != nil || !s.now().Before(da.Expiry) {
			return nil, expiredCode(a)
		}
		fmt.Fprintf(s.out(), "\nno answer from the identity provider (%s); still waiting with the same code\n", auth.Describe(err))
		t := time.NewTimer(time.Duration(max(da.Interval, 1)) * time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("account %q: interrupted; nothing was stored", a.Name)
		case <-codeCtx.Done():
			t.Stop()
			return nil, expiredCode(a)
		case <-t.C:
		}
	}
}

func expiredCode(a *config.Account) error {
	return fmt.Errorf("account %q: the code expired before the sign-in was completed; nothing was stored. Run 'relayd authorize %s' again and enter the new code within its time", a.Name, a.Name)
}

// deviceError says what a device-flow error means and what to do next.
func deviceError(a *config.Account, re *oauth2.RetrieveError) error {
	body := string(re.Body)
	switch {
	case re.ErrorCode == "authorization_declined" || re.ErrorCode == "access_denied":
		return fmt.Errorf("account %q: the sign-in was declined at the identity provider; nothing was stored. Run 'relayd authorize %s' again and approve the request", a.Name, a.Name)
	case re.ErrorCode == "expired_token":
		return expiredCode(a)
	case strings.Contains(body, "AADSTS53003") || strings.Contains(body, "AADSTS53000") || strings.Contains(body, "AADSTS53001") ||
		strings.Contains(body, "Conditional Access"):
		return fmt.Errorf("account %q: a Conditional Access policy of the tenant blocks the device code flow (%s); nothing was stored. Run 'relayd authorize %s --browser' instead, or ask the tenant's admin to allow the device flow for this app",
			a.Name, auth.Describe(re), a.Name)
	}
	return fmt.Errorf("account %q: the identity provider refused the sign-in (%s)%s; nothing was stored", a.Name, auth.Describe(re), explain(a, re))
}

// explain says what a sign-in error a wrong app registration produces
// means and how to fix it (provider.Explain), as ": what: action", or "".
// The IdP's body is only searched for known codes, never shown.
func explain(a *config.Account, err error) string {
	code, text := "", err.Error()
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		code, text = re.ErrorCode, re.ErrorDescription+" "+string(re.Body)
	}
	if s := provider.Explain(a.Provider, code, text); s != "" {
		return ": " + s
	}
	return ""
}

// countdown shows the time left to use the device code: live on a terminal,
// else a line every Progress. It returns a function that stops it.
func (s *SignIn) countdown(expiry time.Time) (stop func()) {
	done := make(chan struct{})
	finished := make(chan struct{})
	every, out := s.progress(), s.out()
	if s.Terminal {
		every = time.Second
	}
	go func() {
		defer close(finished)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			left := expiry.Sub(s.now()).Round(time.Second)
			if s.Terminal {
				fmt.Fprintf(out, "\rwaiting for the sign-in; the code expires in %s   ", left)
			}
			select {
			case <-done:
				if s.Terminal {
					fmt.Fprintln(out)
				}
				return
			case <-t.C:
				if !s.Terminal {
					fmt.Fprintf(out, "still waiting for the sign-in; the code expires in %s\n", expiry.Sub(s.now()).Round(time.Second))
				}
			}
		}
	}()
	return func() { close(done); <-finished }
}

// finish turns a token response into a grant once its ID token names the
// account's login.
func (s *SignIn) finish(ctx context.Context, tok *oauth2.Token, nonce string) (*auth.Grant, error) {
	a := s.Account
	if tok.RefreshToken == "" {
		hint := ""
		if a.Provider == "gmail" {
			hint = " (Google sends one only with access_type=offline and when the consent screen is shown)"
		}
		return nil, fmt.Errorf("account %q: the identity provider sent no refresh token%s; nothing was stored. Check that the offline_access scope is granted, then run 'relayd authorize %s' again", a.Name, hint, a.Name)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, fmt.Errorf("account %q: the identity provider sent no ID token, so relayd cannot check who signed in; nothing was stored. Check that the openid and email scopes are allowed for the app", a.Name)
	}
	who, err := auth.CheckIdentity(ctx, a, s.client(), raw, nonce)
	if err != nil {
		return nil, err
	}
	now := s.now()
	return &auth.Grant{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		ClientID: a.ClientID, GrantedAt: now, RefreshedAt: now, Subject: who, IDToken: raw,
	}, nil
}

// Pending is an authorization code sign-in (RFC 6749 §4.1, with PKCE,
// RFC 7636) started for a redirect URI and waiting for the redirect. Finish
// completes it, once, from any goroutine.
type Pending struct {
	// AuthURL is where the browser goes to sign in.
	AuthURL string
	// State is the authorization request's state parameter: random, and
	// so also a key a caller may index its pending sign-ins by.
	State string
	// RedirectURI is the one given to Start.
	RedirectURI string

	s               *SignIn
	oc              *oauth2.Config // RedirectURL is RedirectURI
	nonce, verifier string
	taken           atomic.Bool // a redirect of this sign-in reached Finish
}

// Start begins the authorization code flow with PKCE whose redirect goes
// to redirectURI: any absolute URL without a fragment (RFC 6749 §3.1.2),
// such as the web console's https://host/oauth/callback or a loopback
// address; the IdP must know it (the app's registration). It talks to
// nobody: the IdP first hears of the sign-in when the browser opens
// AuthURL.
func (s *SignIn) Start(redirectURI string) (*Pending, error) {
	oc, err := s.codeConfig()
	if err != nil {
		return nil, err
	}
	return s.start(oc, redirectURI)
}

// codeConfig is the OAuth client of the authorization code flow, once the
// account is seen to have an authorization endpoint.
func (s *SignIn) codeConfig() (*oauth2.Config, error) {
	if s.Account.AuthURL == "" {
		return nil, fmt.Errorf("account %q: no auth_url for the browser sign-in", s.Account.Name)
	}
	return s.config()
}

// start is Start with oc from codeConfig.
func (s *SignIn) start(oc *oauth2.Config, redirectURI string) (*Pending, error) {
	a := s.Account
	if u, err := url.Parse(redirectURI); err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" {
		return nil, fmt.Errorf("account %q: the redirect URI %q is not an absolute URL without a fragment", a.Name, safetext.Line(redirectURI))
	}
	oc.RedirectURL = redirectURI
	p := &Pending{State: random(), RedirectURI: redirectURI, s: s, oc: oc, nonce: random(), verifier: oauth2.GenerateVerifier()}
	opts := []oauth2.AuthCodeOption{oauth2.S256ChallengeOption(p.verifier),
		oauth2.SetAuthURLParam("login_hint", a.Login), oauth2.SetAuthURLParam("nonce", p.nonce)}
	for k, v := range a.AuthParams {
		opts = append(opts, oauth2.SetAuthURLParam(k, v))
	}
	p.AuthURL = graphConsent(a, oc).AuthCodeURL(p.State, opts...)
	return p, nil
}

// Finish completes the sign-in from the query the redirect carried (or
// that the person pasted: ParsePasted). A query whose state is not
// p.State is refused (RFC 6749 §10.12) and leaves p waiting. The first
// query with p's state ends p, whatever comes of it: its error= is
// explained, or its code is exchanged with the PKCE verifier and the ID
// token must name the account's login. A later Finish fails without
// contacting the IdP (a code works once, and the redirect of a sign-in
// that failed is no better the second time). Nothing is stored.
func (p *Pending) Finish(ctx context.Context, q url.Values) (*auth.Grant, error) {
	s, a := p.s, p.s.Account
	if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(p.State)) != 1 {
		return nil, fmt.Errorf("account %q: the redirect does not belong to this sign-in (its state differs), so it may be forged or from an older attempt; nothing was stored. Run 'relayd authorize %s' again and use the new address", a.Name, a.Name)
	}
	if !p.taken.CompareAndSwap(false, true) {
		return nil, fmt.Errorf("account %q: this sign-in already took its redirect (each takes one); this one was not used and nothing was stored. Run 'relayd authorize %s' again to sign in anew", a.Name, a.Name)
	}
	if e := q.Get("error"); e != "" {
		return nil, redirectError(a, e, q.Get("error_description"))
	}
	code := q.Get("code")
	if code == "" {
		return nil, fmt.Errorf("account %q: the redirect carries no code; nothing was stored", a.Name)
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.client())
	exOpts := []oauth2.AuthCodeOption{oauth2.VerifierOption(p.verifier)}
	if a.Graph() && !a.AppOnly() {
		// The consent named Graph's Mail.Send too; the code is redeemed
		// for the mail resource alone (two answer AADSTS28000), and the
		// Graph token comes later from the same refresh token.
		exOpts = append(exOpts, oauth2.SetAuthURLParam("scope", strings.Join(p.oc.Scopes, " ")))
	}
	tok, err := p.oc.Exchange(ctx, code, exOpts...)
	if ue := auth.Unreachable(a, err); ue != nil {
		return nil, fmt.Errorf("account %q: the sign-in worked, but %w; nothing was stored. Run 'relayd authorize %s' again once it is reachable", a.Name, ue, a.Name)
	}
	if err != nil {
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && strings.Contains(string(re.Body), "AADSTS54005") || strings.Contains(err.Error(), "already redeemed") {
			return nil, fmt.Errorf("account %q: that code was already used (a code works once); nothing was stored. Run 'relayd authorize %s' again", a.Name, a.Name)
		}
		return nil, fmt.Errorf("account %q: the identity provider refused the code: %s%s; nothing was stored", a.Name, auth.Describe(err), explain(a, err))
	}
	return s.finish(ctx, tok, p.nonce)
}

// maxPastedLine bounds what relayd reads from a pasted URL.
const maxPastedLine = 16 << 10

var errPastedTooLong = fmt.Errorf("the pasted line is longer than %d KiB: paste only the browser's address", maxPastedLine>>10)

// ParsePasted turns the address a person pasted (the one the browser was
// sent to after the sign-in) into its query, for Finish. The text may be
// 16 KiB long at most. The error names no account.
func ParsePasted(text string) (url.Values, error) {
	if len(text) > maxPastedLine {
		return nil, errPastedTooLong
	}
	u, err := url.Parse(strings.TrimSpace(text))
	if err != nil || u.RawQuery == "" {
		return nil, errors.New("the pasted text is not the address the browser was sent to (it has no ?code=... or ?error=...)")
	}
	return u.Query(), nil
}

// redirect is what came back to the redirect URI, from the browser or
// pasted by the person.
type redirect struct {
	query url.Values
	err   error
}

// Browser signs in with the authorization code flow, PKCE and a loopback
// redirect (RFC 8252 §7.3): Start, the address on Out, then Finish with the
// redirect. The browser is usually on another machine: the person either
// forwards the port with ssh -L, or pastes the address the browser shows
// after the redirect failed. Whichever comes first wins; a request to the
// port whose state is not this sign-in's is answered 400 and ignored.
func (s *SignIn) Browser(ctx context.Context) (*auth.Grant, error) {
	a, out := s.Account, s.out()
	oc, err := s.codeConfig()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(a.RedirectPort)))
	if err != nil {
		return nil, fmt.Errorf("account %q: listening for the sign-in's redirect on 127.0.0.1:%d: %w (set redirect_port to a free port)", a.Name, a.RedirectPort, err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	host := a.RedirectHost
	if host == "" {
		host = "127.0.0.1"
	}
	// No path: Microsoft matches a registered http://localhost on any
	// port, Google likewise http://127.0.0.1 for desktop apps.
	p, err := s.start(oc, fmt.Sprintf("http://%s:%d", host, port))
	if err != nil {
		return nil, err
	}

	got := make(chan redirect, 2)
	ignored := make(chan struct{}, 1)
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 30 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/" || r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		q := r.URL.Query()
		if q.Get("code") == "" && q.Get("error") == "" {
			http.Error(w, "relayd: this address takes the sign-in's redirect only", http.StatusBadRequest)
			return
		}
		if subtle.ConstantTimeCompare([]byte(q.Get("state")), []byte(p.State)) != 1 {
			// Any local process can reach the port first: a redirect
			// that is not this sign-in's (RFC 6749 §10.12) is ignored,
			// and the real one still awaited.
			http.Error(w, "relayd: this redirect does not belong to the sign-in in progress (its state differs); it was ignored", http.StatusBadRequest)
			select {
			case ignored <- struct{}{}:
			default:
			}
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if q.Get("error") != "" {
			fmt.Fprintln(w, "relayd: the sign-in failed; the terminal says why. You may close this window.")
		} else {
			fmt.Fprintln(w, "relayd: sign-in received. You may close this window; the terminal says how it ends.")
		}
		select {
		case got <- redirect{query: q}:
		default:
		}
	})}
	go srv.Serve(ln)
	defer srv.Close()

	fmt.Fprintf(out, "To sign in as %s for account %q, open this address in a browser:\n\n  %s\n\n", a.Login, a.Name, p.AuthURL)
	target := s.SSHTarget
	if target == "" {
		target = "USER@THIS-HOST"
	}
	fmt.Fprintf(out, "After the sign-in the browser is sent to %s on this machine. If the browser runs on another\n"+
		"machine, either forward the port first, on that machine:\n\n  ssh -L %d:127.0.0.1:%d %s\n\n"+
		"or, after the sign-in, copy the address the browser shows (its page will fail to load) and paste it here:\n",
		p.RedirectURI, port, port, target)
	browserHints(out, a)
	if s.In != nil {
		go readPasted(s.In, got)
	}
	var rd redirect
	for waiting := true; waiting; {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("account %q: interrupted; nothing was stored", a.Name)
		case <-ignored:
			fmt.Fprintf(out, "ignored a request to %s that does not belong to this sign-in (its state differs); still waiting\n", p.RedirectURI)
		case rd = <-got:
			waiting = false
		}
	}
	if rd.err != nil {
		return nil, fmt.Errorf("account %q: %w; nothing was stored", a.Name, rd.err)
	}
	return p.Finish(ctx, rd.query)
}

// browserHints says what the errors a provider shows on its own sign-in
// page mean (they never reach relayd): those a wrong app registration
// produces.
func browserHints(w io.Writer, a *config.Account) {
	var codes []string
	switch a.Provider {
	case "gmail":
		codes = []string{"redirect_uri_mismatch", "access_denied", "invalid_client"}
	case "office365", "outlook":
		codes = []string{"AADSTS50194", "AADSTS700016", "AADSTS65001"}
	default:
		return
	}
	fmt.Fprintln(w, "\nIf the sign-in page shows an error instead:")
	for _, c := range codes {
		fmt.Fprintf(w, "  %s: %s\n", c, provider.Explain(a.Provider, c, c))
	}
	fmt.Fprintln(w)
}

// readPasted reads one pasted line and sends what its URL's query says.
func readPasted(in io.Reader, got chan<- redirect) {
	br := bufio.NewReaderSize(in, 4096)
	for {
		var line []byte
		for {
			chunk, err := br.ReadSlice('\n')
			line = append(line, chunk...)
			if len(line) > maxPastedLine {
				got <- redirect{err: errPastedTooLong}
				return
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			if err != nil && len(strings.TrimSpace(string(line))) == 0 {
				return // end of input: wait for the browser
			}
			break
		}
		text := strings.TrimSpace(string(line))
		if text == "" {
			continue
		}
		q, err := ParsePasted(text)
		got <- redirect{query: q, err: err}
		return
	}
}

// redirectError says what an error in the redirect means.
func redirectError(a *config.Account, code, desc string) error {
	if i := strings.IndexAny(desc, "\r\n"); i >= 0 {
		desc = desc[:i]
	}
	// Whoever sent the redirect wrote these: shown on a terminal.
	code, desc = safetext.Clip(code, 100), safetext.Line(desc)
	what := code
	if desc != "" {
		what += ": " + desc
	}
	more := provider.Explain(a.Provider, code, desc)
	switch {
	case code == "access_denied" && more != "":
		return fmt.Errorf("account %q: %s; nothing was stored", a.Name, more)
	case code == "access_denied":
		return fmt.Errorf("account %q: the sign-in was cancelled or access was denied (%s); nothing was stored. Run 'relayd authorize %s' again and accept the permissions", a.Name, what, a.Name)
	case code == "consent_required" || strings.Contains(desc, "AADSTS65001") || strings.Contains(desc, "AADSTS90094"):
		return fmt.Errorf("account %q: the app needs an administrator's consent (%s); nothing was stored. Ask a tenant admin to grant consent, then run 'relayd authorize %s' again", a.Name, what, a.Name)
	case more != "":
		return fmt.Errorf("account %q: the identity provider ended the sign-in with an error (%s): %s; nothing was stored", a.Name, what, more)
	}
	return fmt.Errorf("account %q: the identity provider ended the sign-in with an error (%s); nothing was stored", a.Name, what)
}

func random() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
