// Package testkit holds in-process fakes that behave like the real providers
// (see docs/providers.md): an OAuth 2.0 identity provider with refresh-token
// rotation, revocation, Microsoft-style AADSTS errors and RFC 7662 token
// introspection, and XOAUTH2-only IMAP upstreams in Google's and Exchange's
// styles, and an XOAUTH2-only SMTP submission upstream. Tests and
// `relayd demo` use them, so nothing here imports package testing: the
// tests' builder, which does (internal/relaytest), and the launchers of
// real Dovecot and Postfix (internal/realserver) live apart. Nothing here
// listens beyond loopback.
package testkit

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// IdP is a fake OAuth 2.0 identity provider. Its token endpoint is
// URL+"/token", its introspection endpoint URL+"/introspect". Methods are
// safe for use from any goroutine.
type IdP struct {
	URL string

	srv *http.Server
	ln  net.Listener

	// AccessTTL is the lifetime of issued access tokens. Default 1 hour.
	AccessTTL time.Duration
	// tenantID, when set, makes the IdP answer as Microsoft's multi-tenant
	// endpoints: per-tenant issuers and a tid claim (see IssuerURL).
	tenantID string
	// deviceInterval is the polling interval a device authorization asks
	// for, in seconds (default 1); deviceTTL its lifetime (default 15m).
	deviceInterval int
	deviceTTL      time.Duration

	ia interactive

	refreshes atomic.Int64
	down      atomic.Bool
	failWith  atomic.Pointer[tokenFailure] // FailTokenRequests
	stalls    atomic.Int64                 // StallDevicePolls

	mu      sync.Mutex
	clients map[string]string          // client id → secret ("" for public)
	grants  map[string]*grant          // refresh token → grant
	access  map[string]*accessToken    // access token → holder
	apps    map[string]map[string]bool // client id → mailboxes granted app access
	expired map[string]bool            // client ids whose secret expired
	// signInFrequency ends login's grants as a Conditional Access policy
	// does (AADSTS70043).
	signInFrequency map[string]time.Duration
	serviceAccounts map[string]*serviceAccount // client_email →
	clientCerts     map[string]*clientCert     // client id →
	issued          []string                   // every token ever issued
	graphs          map[string]bool            // Graph endpoints' URLs (idp_resource.go)
	unconsented     map[string]bool            // scopes refused with AADSTS65001
	grantedScopes   map[string]string          // login → the "scope" its tokens are answered with (SetGrantedScopes)
}

type grant struct {
	clientID, login string
	scope           string // of an interactive grant: openid gets ID tokens on refresh too
}

type accessToken struct {
	login   string // "" for app-only tokens
	app     string // client id of an app-only token
	expires time.Time
	// aud is the Graph endpoint the token is for; "" for the mail
	// protocols. perms are its permissions (scp or roles).
	aud   string
	perms []string
}

// forScope sets the resource and permissions of a token asked for with
// ts; an app-only Graph token gets the application permission Mail.Send
// (roles) unless its consent is withheld. p.mu is held.
func (a *accessToken) forScope(p *IdP, ts tokenScope) *accessToken {
	a.aud, a.perms = ts.aud, ts.perms
	if a.app != "" && ts.aud != "" {
		a.perms = nil
		if !p.unconsented[ts.aud+"/Mail.Send"] {
			a.perms = []string{"Mail.Send"}
		}
	}
	return a
}

// NewIdP starts a fake IdP on 127.0.0.1.
func NewIdP() (p *IdP, err error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p = &IdP{
		URL:       "http://" + ln.Addr().String(),
		ln:        ln,
		AccessTTL: time.Hour,
		clients:   map[string]string{},
		grants:    map[string]*grant{},
		access:    map[string]*accessToken{},
		apps:      map[string]map[string]bool{},
		expired:   map[string]bool{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", p.handleToken)
	mux.HandleFunc("POST /introspect", p.handleIntrospect)
	mux.HandleFunc("POST /devicecode", p.handleDeviceCode)
	mux.HandleFunc("GET /authorize", p.handleAuthorize)
	mux.HandleFunc("GET /.well-known/openid-configuration", p.handleDiscovery)
	mux.HandleFunc("GET /{tenant}/v2.0/.well-known/openid-configuration", p.handleDiscovery)
	mux.HandleFunc("GET /jwks", p.handleJWKS)
	p.srv = &http.Server{Handler: mux}
	go p.srv.Serve(ln)
	return p, nil
}

// Close stops the IdP.
func (p *IdP) Close() error { return p.srv.Close() }

// TokenURL is the token endpoint.
func (p *IdP) TokenURL() string { return p.URL + "/token" }

// IntrospectURL is the RFC 7662 introspection endpoint Dovecot's oauth2
// passdb calls.
func (p *IdP) IntrospectURL() string { return p.URL + "/introspect" }

// AddClient registers an OAuth client. A public client has secret "".
func (p *IdP) AddClient(id, secret string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.clients[id] = secret
}

// GrantApp gives client id app-only access to mailbox (Microsoft's
// IMAP.AccessAsApp with the service principal registered in Exchange).
func (p *IdP) GrantApp(clientID, mailbox string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.apps[clientID] == nil {
		p.apps[clientID] = map[string]bool{}
	}
	p.apps[clientID][mailbox] = true
}

// IssueRefreshToken creates a grant of login to clientID, as a completed
// consent would, and returns its refresh token.
func (p *IdP) IssueRefreshToken(clientID, login string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	rt := "rt-" + randHex()
	p.grants[rt] = &grant{clientID: clientID, login: login}
	p.issued = append(p.issued, rt)
	return rt
}

// IssueAccessToken returns an access token for login valid for ttl, for
// tests that talk to an upstream directly.
func (p *IdP) IssueAccessToken(login string, ttl time.Duration) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	at := "at-" + randHex()
	p.access[at] = &accessToken{login: login, expires: time.Now().Add(ttl)}
	p.issued = append(p.issued, at)
	return at
}

// Revoke kills every grant and access token of login, as a password change
// or an admin's revocation does.
func (p *IdP) Revoke(login string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for rt, g := range p.grants {
		if g.login == login {
			delete(p.grants, rt)
		}
	}
	for at, a := range p.access {
		if a.login == login {
			delete(p.access, at)
		}
	}
}

// RevokeAccessTokens kills the access tokens of login but not its grant,
// as Microsoft's continuous access evaluation does: a refresh still works.
func (p *IdP) RevokeAccessTokens(login string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for at, a := range p.access {
		if a.login == login {
			delete(p.access, at)
		}
	}
}

// ExpireAccessTokens makes every issued access token expired.
func (p *IdP) ExpireAccessTokens() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, a := range p.access {
		a.expires = time.Now().Add(-time.Second)
	}
}

// ExpireClientSecret makes every token request of client id fail as
// Microsoft's does once the app's secret expired (AADSTS7000222).
func (p *IdP) ExpireClientSecret(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expired[id] = true
}

// SetDown makes the token endpoint answer 503 until called with false.
func (p *IdP) SetDown(down bool) { p.down.Store(down) }

// tokenFailure is the answer FailTokenRequests set.
type tokenFailure struct {
	status     int
	code, desc string
}

// FailTokenRequests makes the token endpoint answer every request with
// HTTP status and an OAuth error code and error_description desc (a
// misbehaving IdP: huge or garbled texts), until called with status 0.
func (p *IdP) FailTokenRequests(status int, code, desc string) {
	if status == 0 {
		p.failWith.Store(nil)
		return
	}
	p.failWith.Store(&tokenFailure{status, code, desc})
}

// Issued returns every access and refresh token the IdP has issued, for
// tests that check that no secret leaked.
func (p *IdP) Issued() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.issued...)
}

// Refreshes counts refresh_token grant requests answered so far, failed
// ones included.
func (p *IdP) Refreshes() int { return int(p.refreshes.Load()) }

// Validate reports who an access token belongs to and whether it may open
// mailbox: the signed-in user's own mailbox, or any mailbox granted to an
// app-only client. Shared mailboxes are modelled by the caller.
func (p *IdP) Validate(token, mailbox string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.access[token]
	if a == nil || time.Now().After(a.expires) || a.aud != "" {
		return false // a Graph token does not open a mailbox over IMAP
	}
	if a.app != "" {
		return p.apps[a.app][mailbox]
	}
	return a.login == mailbox
}

func (p *IdP) handleToken(w http.ResponseWriter, r *http.Request) {
	if p.down.Load() {
		http.Error(w, "service unavailable", http.StatusServiceUnavailable)
		return
	}
	if f := p.failWith.Load(); f != nil {
		oauthError(w, f.status, f.code, f.desc, 0)
		return
	}
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", "AADSTS900144: bad form", 900144)
		return
	}
	clientID, secret, ok := r.BasicAuth()
	if !ok {
		clientID, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	grantType := r.PostForm.Get("grant_type")
	if grantType == "refresh_token" {
		p.refreshes.Add(1)
	}
	if grantType == "urn:ietf:params:oauth:grant-type:device_code" && p.takeStall() {
		<-r.Context().Done() // no answer until the client gives up
		return
	}

	p.mu.Lock()
	defer p.mu.Unlock()
	if grantType == "urn:ietf:params:oauth:grant-type:jwt-bearer" {
		p.serviceAccountToken(w, r)
		return
	}
	if r.PostForm.Get("client_assertion_type") == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		if code, desc := p.checkAssertion(clientID, r.PostForm.Get("client_assertion")); code != 0 {
			oauthError(w, 401, "invalid_client", desc, code)
			return
		}
		if grantType == "client_credentials" {
			if ts, ok := p.scopeOf(w, r.PostForm.Get("scope")); ok {
				p.writeToken(w, (&accessToken{app: clientID}).forScope(p, ts), "", "")
			}
			return
		}
	}
	if p.expired[clientID] {
		oauthError(w, 401, "invalid_client", "AADSTS7000222: The provided client secret keys for app are expired.", 7000222)
		return
	}
	want, known := p.clients[clientID]
	if !known || want != secret {
		oauthError(w, 401, "invalid_client", "AADSTS7000215: Invalid client secret provided.", 7000215)
		return
	}
	switch grantType {
	case "refresh_token":
		rt := r.PostForm.Get("refresh_token")
		g := p.grants[rt]
		if g == nil {
			oauthError(w, 400, "invalid_grant", "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.", 70008)
			return
		}
		if d, ok := p.signInFrequency[g.login]; ok {
			oauthError(w, 400, "invalid_grant", fmt.Sprintf("AADSTS70043: The refresh token has expired or is invalid due to sign-in frequency checks by conditional access. The token was issued on 2026-11-20T09:00:00.0000000Z and the maximum allowed lifetime for this request is %d.", int(d/time.Second)), 70043)
			return
		}
		if g.clientID != clientID {
			oauthError(w, 400, "invalid_grant", "AADSTS700024: Refresh token was issued to a different client.", 700024)
			return
		}
		scope := r.PostForm.Get("scope")
		if scope == "" {
			scope = p.mailScope(g.scope)
		}
		ts, ok := p.scopeOf(w, scope)
		if !ok {
			return
		}
		// Refresh tokens roll on every use: the old one dies.
		delete(p.grants, rt)
		newRT := "rt-" + randHex()
		p.grants[newRT] = g
		p.issued = append(p.issued, newRT)
		p.writeToken(w, (&accessToken{login: g.login}).forScope(p, ts), newRT, p.idToken(clientID, g.login, "", g.scope))
	case "client_credentials":
		if secret == "" {
			oauthError(w, 400, "invalid_client", "AADSTS7000218: The request body must contain client_secret.", 7000218)
			return
		}
		if ts, ok := p.scopeOf(w, r.PostForm.Get("scope")); ok {
			p.writeToken(w, (&accessToken{app: clientID}).forScope(p, ts), "", "")
		}
	case "authorization_code":
		p.initInteractive()
		p.redeemCode(w, r, clientID)
	case "urn:ietf:params:oauth:grant-type:device_code":
		p.initInteractive()
		p.pollDevice(w, r, clientID)
	default:
		oauthError(w, 400, "unsupported_grant_type", "AADSTS70003: unsupported grant type", 70003)
	}
}

// writeToken stores a and answers with it. p.mu is held.
func (p *IdP) writeToken(w http.ResponseWriter, a *accessToken, refreshToken, idToken string) {
	at := "at-" + randHex()
	if a.aud != "" {
		c := graphClaims{Aud: a.aud, UPN: a.login, AppID: a.app}
		if a.app != "" {
			c.Roles = a.perms
		} else {
			c.Scp = strings.Join(a.perms, " ")
		}
		at = graphToken(c)
	}
	a.expires = time.Now().Add(p.AccessTTL)
	p.access[at] = a
	p.issued = append(p.issued, at)
	resp := map[string]any{
		"token_type":   "Bearer",
		"access_token": at,
		"expires_in":   int(p.AccessTTL / time.Second),
	}
	if refreshToken != "" {
		resp["refresh_token"] = refreshToken
	}
	if sc, ok := p.grantedScopes[a.login]; ok && a.login != "" && a.aud == "" {
		resp["scope"] = sc
	}
	if idToken != "" {
		resp["id_token"] = idToken
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(resp)
}

func (p *IdP) handleIntrospect(w http.ResponseWriter, r *http.Request) {
	r.ParseForm()
	tok := r.PostForm.Get("token")
	p.mu.Lock()
	a := p.access[tok]
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if a == nil || time.Now().After(a.expires) || a.login == "" {
		fmt.Fprint(w, `{"active": false}`)
		return
	}
	json.NewEncoder(w).Encode(map[string]any{"active": true, "email": a.login})
}

func oauthError(w http.ResponseWriter, status int, code, desc string, aadsts int) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{
		"error": code, "error_description": desc, "error_codes": []int{aadsts},
	})
}

func randHex() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// StartIdP starts an IdP for a test, with a public client "client", and
// stops it when the test ends.
func StartIdP(t TB) *IdP {
	t.Helper()
	idp, err := NewIdP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	idp.AddClient("client", "")
	return idp
}
