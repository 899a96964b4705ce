package testkit

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// The interactive side of the fake IdP: the device authorization endpoint
// (RFC 8628), the authorization endpoint with PKCE (RFC 7636), and ID
// tokens signed with a key served at a JWKS URL behind an OpenID Connect
// discovery document. With TenantID set it answers as Microsoft's
// multi-tenant endpoints do: the discovery document names
// "{tenantid}" in its issuer and each ID token carries its tid.

// interactive is the IdP's state for interactive sign-ins.
type interactive struct {
	once sync.Once
	key  *rsa.PrivateKey

	devices map[string]*deviceAuth // device_code →
	users   map[string]string      // user_code → device_code
	codes   map[string]*authCode   // authorization code →
	// signInAs is who the next interactive sign-in signs in as ("": the
	// login_hint); authError, when set, is the next redirect's error.
	signInAs  string
	authError [2]string
	// dropPolls and slowDowns: the next device polls to drop (connection
	// closed without an answer) or to answer slow_down.
	dropPolls, slowDowns int
	// blockDevice answers device polls as Conditional Access does when it
	// blocks the device flow (AADSTS53003).
	blockDevice bool
	emails      map[string]string // login → email claim, when not the login
	// badAnswer spoils the next code or device grant's token response:
	// "no-refresh-token", "no-id-token" or "malformed".
	badAnswer string
}

type deviceAuth struct {
	clientID, userCode, scope string
	expires                   time.Time
	login                     string // set when approved
	declined                  bool
}

type authCode struct {
	clientID, redirectURI, challenge, login, nonce, scope string
	used                                                  bool
}

func (p *IdP) initInteractive() {
	p.ia.once.Do(func() {
		p.ia.key, _ = rsa.GenerateKey(rand.Reader, 2048)
		p.ia.devices = map[string]*deviceAuth{}
		p.ia.users = map[string]string{}
		p.ia.codes = map[string]*authCode{}
		p.ia.emails = map[string]string{}
	})
}

// SetTenantID makes the IdP answer as Microsoft's multi-tenant endpoints
// do, for a user of tenant id: the discovery document's issuer names
// "{tenantid}", and ID tokens carry iss URL/id/v2.0 and tid id.
func (p *IdP) SetTenantID(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.tenantID = id
}

// SetDeviceTiming sets the polling interval (seconds) and lifetime of
// device authorizations; 0 keeps the default (1 s, 15 minutes).
func (p *IdP) SetDeviceTiming(interval int, ttl time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.deviceInterval, p.deviceTTL = interval, ttl
}

// IssuerURL is the issuer to configure for an account of this IdP: its own
// URL, or with a tenant ID Microsoft's multi-tenant form
// URL/organizations/v2.0.
func (p *IdP) IssuerURL() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tenantID != "" {
		return p.URL + "/organizations/v2.0"
	}
	return p.URL
}

// AuthURL is the authorization endpoint, DeviceAuthURL the device
// authorization endpoint.
func (p *IdP) AuthURL() string       { return p.URL + "/authorize" }
func (p *IdP) DeviceAuthURL() string { return p.URL + "/devicecode" }

// SignInAs makes the next interactive sign-ins sign in as login, whatever
// the login_hint said (a browser already signed in to another account).
func (p *IdP) SignInAs(login string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ia.signInAs = login
}

// SetEmail gives login an email claim that differs from it (a UPN that is
// not the mail address).
func (p *IdP) SetEmail(login, email string) {
	p.initInteractive()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ia.emails[login] = email
}

// FailNextAuthorization makes the next authorization redirect carry
// error=code with desc (access_denied, consent_required, AADSTS texts).
func (p *IdP) FailNextAuthorization(code, desc string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ia.authError = [2]string{code, desc}
}

// SpoilNextGrant makes the next token response of a code or device grant
// lack its refresh token ("no-refresh-token") or ID token ("no-id-token"),
// or be malformed JSON ("malformed").
func (p *IdP) SpoilNextGrant(how string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ia.badAnswer = how
}

// writeGrant answers a code or device grant, spoiled as SpoilNextGrant
// said, with an access token for the one resource scope names (two answer
// AADSTS28000). p.mu is held.
// consented is the scope the user consented to; requested, when not
// empty, the part of it the token request names.
func (p *IdP) writeGrant(w http.ResponseWriter, clientID, login, nonce, consented, requested string) {
	scope := consented
	if requested != "" {
		scope = requested
	}
	ts, ok := p.scopeOf(w, scope)
	if !ok {
		return
	}
	how := p.ia.badAnswer
	p.ia.badAnswer = ""
	if how == "malformed" {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, `{"access_token": "at-broken", "token_type": `)
		return
	}
	rt := "rt-" + randHex()
	p.grants[rt] = &grant{clientID: clientID, login: login, scope: consented}
	p.issued = append(p.issued, rt)
	id := p.idToken(clientID, login, nonce, scope)
	switch how {
	case "no-refresh-token":
		rt = ""
	case "no-id-token":
		id = ""
	}
	p.writeToken(w, (&accessToken{login: login}).forScope(p, ts), rt, id)
}

// DropDevicePolls closes the next n device-code polls without an answer.
func (p *IdP) DropDevicePolls(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ia.dropPolls = n
}

// StallDevicePolls leaves the next n device-code polls without an answer
// until the client gives up (its timeout, or the connection closed): an
// IdP that is slow for once.
func (p *IdP) StallDevicePolls(n int) { p.stalls.Store(int64(n)) }

// takeStall reports whether this poll is one StallDevicePolls asked for.
func (p *IdP) takeStall() bool {
	for {
		n := p.stalls.Load()
		if n <= 0 {
			return false
		}
		if p.stalls.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// SlowDownDevicePolls answers the next n device-code polls slow_down.
func (p *IdP) SlowDownDevicePolls(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ia.slowDowns = n
}

// BlockDeviceFlow answers device-code polls as a Conditional Access policy
// that blocks the device flow does.
func (p *IdP) BlockDeviceFlow() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.ia.blockDevice = true
}

// ApproveDevice signs in at the verification page with userCode, as
// login (or as SignInAs said), and approves.
func (p *IdP) ApproveDevice(userCode, login string) error {
	return p.decideDevice(userCode, func(d *deviceAuth) {
		d.login = login
		if p.ia.signInAs != "" {
			d.login = p.ia.signInAs
		}
	})
}

// DeclineDevice declines the sign-in at the verification page.
func (p *IdP) DeclineDevice(userCode string) error {
	return p.decideDevice(userCode, func(d *deviceAuth) { d.declined = true })
}

func (p *IdP) decideDevice(userCode string, fn func(*deviceAuth)) error {
	p.initInteractive()
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.ia.devices[p.ia.users[userCode]]
	if d == nil {
		return fmt.Errorf("no device authorization with user code %q", userCode)
	}
	fn(d)
	return nil
}

func (p *IdP) handleDeviceCode(w http.ResponseWriter, r *http.Request) {
	p.initInteractive()
	if err := r.ParseForm(); err != nil {
		oauthError(w, 400, "invalid_request", "AADSTS900144: bad form", 900144)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	clientID := r.PostForm.Get("client_id")
	if _, ok := p.clients[clientID]; !ok {
		oauthError(w, 400, "unauthorized_client", "AADSTS700016: Application with identifier '"+clientID+"' was not found in the directory.", 700016)
		return
	}
	dc, uc := "dc-"+randHex(), strings.ToUpper(randHex()[:8])
	ttl := p.deviceTTL
	if ttl == 0 {
		ttl = 15 * time.Minute
	}
	p.ia.devices[dc] = &deviceAuth{clientID: clientID, userCode: uc, scope: r.PostForm.Get("scope"), expires: time.Now().Add(ttl)}
	p.ia.users[uc] = dc
	p.issued = append(p.issued, dc)
	interval := p.deviceInterval
	if interval == 0 {
		interval = 1
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"device_code": dc, "user_code": uc, "verification_uri": p.URL + "/device",
		"expires_in": int(ttl / time.Second), "interval": interval,
		"message": "To sign in, use a web browser to open the page " + p.URL + "/device and enter the code " + uc + " to authenticate.",
	})
}

// pollDevice answers a device_code grant request. p.mu is held.
func (p *IdP) pollDevice(w http.ResponseWriter, r *http.Request, clientID string) {
	if p.ia.dropPolls > 0 {
		p.ia.dropPolls--
		if hj, ok := w.(http.Hijacker); ok {
			if c, _, err := hj.Hijack(); err == nil {
				c.Close()
				return
			}
		}
	}
	d := p.ia.devices[r.PostForm.Get("device_code")]
	switch {
	case d == nil || d.clientID != clientID:
		oauthError(w, 400, "invalid_grant", "AADSTS70019: Verification code expired.", 70019)
	case p.ia.blockDevice:
		oauthError(w, 400, "invalid_grant", "AADSTS53003: Access has been blocked by Conditional Access policies. The access policy does not allow token issuance.", 53003)
	case time.Now().After(d.expires):
		oauthError(w, 400, "expired_token", "AADSTS70020: The provided value for the input parameter 'device_code' is not valid. This device code has expired.", 70020)
	case d.declined:
		oauthError(w, 400, "authorization_declined", "AADSTS70000: The user declined the authentication.", 70000)
	case p.ia.slowDowns > 0:
		p.ia.slowDowns--
		oauthError(w, 400, "slow_down", "AADSTS70016: slow down", 70016)
	case d.login == "":
		oauthError(w, 400, "authorization_pending", "AADSTS70016: OAuth 2.0 device flow error. Authorization is pending. Continue polling.", 70016)
	default:
		delete(p.ia.devices, r.PostForm.Get("device_code"))
		p.writeGrant(w, clientID, d.login, "", d.scope, "")
	}
}

func (p *IdP) handleAuthorize(w http.ResponseWriter, r *http.Request) {
	p.initInteractive()
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Scheme != "http" || (redirect.Hostname() != "127.0.0.1" && redirect.Hostname() != "localhost") {
		http.Error(w, "AADSTS50011: The redirect URI specified in the request does not match the redirect URIs configured for the application.", http.StatusBadRequest)
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	back := redirect.Query()
	back.Set("state", q.Get("state"))
	clientID := q.Get("client_id")
	switch {
	case p.ia.authError[0] != "":
		back.Set("error", p.ia.authError[0])
		back.Set("error_description", p.ia.authError[1])
		p.ia.authError = [2]string{}
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		back.Set("error", "invalid_request")
		back.Set("error_description", "AADSTS9002325: Proof Key for Code Exchange is required for cross-origin authorization code redemption.")
	default:
		if _, ok := p.clients[clientID]; !ok {
			back.Set("error", "unauthorized_client")
			back.Set("error_description", "AADSTS700016: Application with identifier '"+clientID+"' was not found in the directory.")
			break
		}
		login := q.Get("login_hint")
		if p.ia.signInAs != "" {
			login = p.ia.signInAs
		}
		code := "code-" + randHex()
		p.ia.codes[code] = &authCode{clientID: clientID, redirectURI: q.Get("redirect_uri"), challenge: q.Get("code_challenge"),
			login: login, nonce: q.Get("nonce"), scope: q.Get("scope")}
		p.issued = append(p.issued, code)
		back.Set("code", code)
	}
	redirect.RawQuery = back.Encode()
	http.Redirect(w, r, redirect.String(), http.StatusFound)
}

// redeemCode answers an authorization_code grant request. p.mu is held.
func (p *IdP) redeemCode(w http.ResponseWriter, r *http.Request, clientID string) {
	f := r.PostForm
	p.issued = append(p.issued, f.Get("code_verifier"))
	c := p.ia.codes[f.Get("code")]
	sum := sha256.Sum256([]byte(f.Get("code_verifier")))
	switch {
	case c == nil || c.clientID != clientID:
		oauthError(w, 400, "invalid_grant", "AADSTS9002313: Invalid request. Request is malformed or invalid.", 9002313)
	case c.used:
		oauthError(w, 400, "invalid_grant", "AADSTS54005: OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token.", 54005)
	case f.Get("redirect_uri") != c.redirectURI:
		oauthError(w, 400, "invalid_grant", "AADSTS50148: The redirect_uri does not match the one of the authorization request.", 50148)
	case base64.RawURLEncoding.EncodeToString(sum[:]) != c.challenge:
		c.used = true
		oauthError(w, 400, "invalid_grant", "AADSTS501481: The Code_Verifier does not match the code_challenge supplied in the authorization request.", 501481)
	default:
		c.used = true
		// Consented at /authorize, where resources may mix; the token
		// request names one.
		p.writeGrant(w, clientID, c.login, c.nonce, c.scope, f.Get("scope"))
	}
}

// idToken signs an ID token for login when scope asks for openid, else
// returns "". p.mu is held.
func (p *IdP) idToken(clientID, login, nonce, scope string) string {
	if !slices.Contains(strings.Fields(scope), "openid") {
		return ""
	}
	p.initInteractive()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.ia.key, KeyID: "k1"}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return ""
	}
	email := login
	if e, ok := p.ia.emails[login]; ok {
		email = e
	}
	now := time.Now()
	claims := map[string]any{
		"iss": p.URL, "aud": clientID, "sub": "sub-" + login, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
		"preferred_username": login, "email": email, "name": "Test User",
	}
	if p.tenantID != "" {
		claims["iss"] = p.URL + "/" + p.tenantID + "/v2.0"
		claims["tid"] = p.tenantID
	}
	if nonce != "" {
		claims["nonce"] = nonce
	}
	raw, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		return ""
	}
	p.issued = append(p.issued, raw)
	return raw
}

func (p *IdP) handleDiscovery(w http.ResponseWriter, r *http.Request) {
	issuer := p.URL
	p.mu.Lock()
	if p.tenantID != "" {
		issuer = p.URL + "/{tenantid}/v2.0"
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{
		"issuer": issuer, "authorization_endpoint": p.AuthURL(), "token_endpoint": p.TokenURL(),
		"device_authorization_endpoint": p.DeviceAuthURL(), "jwks_uri": p.URL + "/jwks",
		"response_types_supported":              []string{"code"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
	})
}

func (p *IdP) handleJWKS(w http.ResponseWriter, r *http.Request) {
	p.initInteractive()
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.ia.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(set)
}

// Client returns an HTTP client that reaches the IdP in memory, without a
// connection: for tests in a testing/synctest bubble, where a TCP server
// stalls the fake clock.
func (p *IdP) Client() *http.Client {
	return &http.Client{Transport: inMemory{p.srv.Handler}}
}

type inMemory struct{ h http.Handler }

func (t inMemory) RoundTrip(r *http.Request) (*http.Response, error) {
	w := &memResponse{header: http.Header{}, status: http.StatusOK}
	t.h.ServeHTTP(w, r)
	if err := r.Context().Err(); err != nil {
		return nil, err // the client gave up waiting
	}
	return &http.Response{
		StatusCode: w.status, Status: fmt.Sprintf("%d %s", w.status, http.StatusText(w.status)),
		Header: w.header, Body: io.NopCloser(bytes.NewReader(w.body.Bytes())), Request: r,
		ProtoMajor: 1, ProtoMinor: 1, ContentLength: int64(w.body.Len()),
	}, nil
}

type memResponse struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (w *memResponse) Header() http.Header { return w.header }
func (w *memResponse) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
}
func (w *memResponse) Write(b []byte) (int, error) {
	w.wrote = true
	return w.body.Write(b)
}

// EndGrantsBySignInFrequency makes refreshes of login's grants fail as a
// Conditional Access sign-in frequency policy with the given lifetime does
// (AADSTS70043).
func (p *IdP) EndGrantsBySignInFrequency(login string, lifetime time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.signInFrequency == nil {
		p.signInFrequency = map[string]time.Duration{}
	}
	p.signInFrequency[login] = lifetime
}
