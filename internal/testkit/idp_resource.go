package testkit

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// Resources, as Microsoft's identity platform has them: a scope such as
// https://graph.microsoft.com/Mail.Send names its resource (the URL's
// origin) and a permission; offline_access, openid, email and profile name
// none. One token request gets a token for one resource: scopes of two
// answer AADSTS28000, also at the token step of a device authorization
// that accepted them. Access tokens for a Graph endpoint registered with
// the IdP (StartGraph) are JWTs whose scp (delegated) or roles (app-only)
// list the permissions granted, as Graph's are; every other access token
// is for the mail protocols (IMAP, POP, SMTP) and opaque.

// neutralScopes name no resource.
var neutralScopes = []string{"offline_access", "openid", "email", "profile"}

// resourceOf is the resource a scope names ("" for none), and the
// permission.
func resourceOf(scope string) (resource, perm string) {
	if slices.Contains(neutralScopes, scope) {
		return "", ""
	}
	u, err := url.Parse(scope)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return "mail", scope // a test's plain scope ("mail"): the mail protocols
	}
	return u.Scheme + "://" + u.Host, strings.TrimPrefix(u.Path, "/")
}

// tokenScope is what one token request asks for: the audience ("" for the
// mail protocols, else a registered Graph endpoint's URL) and the
// permissions named.
type tokenScope struct {
	aud   string
	perms []string
}

// scopeOf reads a token request's scope parameter. It answers the
// request itself (and returns ok false) when the scopes name two
// resources (AADSTS28000) or one the tenant has not consented to
// (AADSTS65001). p.mu is held.
func (p *IdP) scopeOf(w http.ResponseWriter, scope string) (ts tokenScope, ok bool) {
	var res []string
	for _, s := range strings.Fields(scope) {
		r, perm := resourceOf(s)
		if r == "" {
			continue
		}
		if p.unconsented[s] {
			oauthError(w, 400, "invalid_grant", "AADSTS65001: The user or administrator has not consented to use the application with ID 'client' named 'relayd'. Send an interactive authorization request for this user and resource.", 65001)
			return ts, false
		}
		if !slices.Contains(res, r) {
			res = append(res, r)
		}
		ts.perms = append(ts.perms, perm)
	}
	if len(res) > 1 {
		oauthError(w, 400, "invalid_request", "AADSTS28000: Provided value for the input parameter scope is not valid because it contains more than one resource. Scope "+scope+" is not valid.", 28000)
		return ts, false
	}
	if len(res) == 1 && p.graphs[res[0]] {
		ts.aud = res[0]
	}
	return ts, true
}

// mailScope is the part of a grant's scope that names no Graph resource:
// what a refresh without a scope parameter gets a token for. p.mu is held.
func (p *IdP) mailScope(scope string) string {
	var keep []string
	for _, s := range strings.Fields(scope) {
		if r, _ := resourceOf(s); !p.graphs[r] {
			keep = append(keep, s)
		}
	}
	return strings.Join(keep, " ")
}

// WithholdConsent makes token requests naming scope fail as Microsoft's do
// when neither the user nor an admin consented to that permission
// (AADSTS65001), until GiveConsent.
func (p *IdP) WithholdConsent(scope string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.unconsented == nil {
		p.unconsented = map[string]bool{}
	}
	p.unconsented[scope] = true
}

// GiveConsent undoes WithholdConsent, as an admin's consent does.
func (p *IdP) GiveConsent(scope string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.unconsented, scope)
}

// registerGraph makes scopes under base the Graph resource's.
func (p *IdP) registerGraph(base string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.graphs == nil {
		p.graphs = map[string]bool{}
	}
	p.graphs[base] = true
}

// graphClaims are the claims of a Graph access token a Graph endpoint
// reads.
type graphClaims struct {
	Aud   string   `json:"aud"`
	Scp   string   `json:"scp,omitempty"`
	Roles []string `json:"roles,omitempty"`
	UPN   string   `json:"upn,omitempty"`
	AppID string   `json:"appid,omitempty"`
	ID    string   `json:"uti"`
}

// graphToken is a JWT-shaped access token carrying c. Graph checks its
// signature; the fake Graph looks it up in the IdP instead, so it is
// unsigned.
func graphToken(c graphClaims) string {
	c.ID = randHex()
	enc := base64.RawURLEncoding
	hdr, _ := json.Marshal(map[string]string{"typ": "JWT", "alg": "none"})
	body, _ := json.Marshal(c)
	return enc.EncodeToString(hdr) + "." + enc.EncodeToString(body) + "." + enc.EncodeToString([]byte(randHex()))
}

// GraphToken is what the IdP knows of a Graph access token.
type GraphToken struct {
	// Login is the signed-in user of a delegated token; App the client id
	// of an app-only one.
	Login, App string
	// Perms are the permissions granted (scp or roles): "Mail.Send".
	Perms []string
}

// ValidateGraph returns the holder of a live access token for the Graph
// endpoint at aud, or nil.
func (p *IdP) ValidateGraph(token, aud string) *GraphToken {
	p.mu.Lock()
	defer p.mu.Unlock()
	a := p.access[token]
	if a == nil || a.aud != aud || time.Now().After(a.expires) {
		return nil
	}
	return &GraphToken{Login: a.login, App: a.app, Perms: a.perms}
}

// AppMayAct reports whether app-only client id may act for mailbox.
func (p *IdP) AppMayAct(clientID, mailbox string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.apps[clientID][mailbox]
}
