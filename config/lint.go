package config

import (
	"fmt"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Problem is something Lint finds in a configuration that Parse accepts
// but that will fail once relayd runs (or, for a Warning, fails in some
// set-ups): a placeholder left from the example file, a scope the
// account's protocols refuse, a credential the provider will ask for.
type Problem struct {
	Key string // e.g. "account[1].client_id"
	Msg string // what is wrong and what to do
	// Warning: it fails only in some set-ups (a single-tenant app
	// registration with the default tenant); check-config still says ok.
	Warning bool
}

func (p Problem) String() string { return p.Key + ": " + p.Msg }

// ExampleHash is the local_password_hash of config.example.toml: the
// bcrypt hash of "change-me", which anyone who read the example knows.
const ExampleHash = "$2a$10$jt5dVUuexLPaatNQv9YjI.Do6BkKGAyyFzID7aVzubZzNNzwkE2Ma"

// Lint reports what Parse accepts but relayd will trip over: `relayd
// check-config` (and so the unit's ExecStartPre) refuses a configuration
// with any Problem that is not a Warning. Parse stays lenient about these
// so that the example file parses (its placeholders are what Lint names).
// A local_password_hash is compared with the example's as a string: a
// bcrypt check per account would cost check-config (and every start) a
// tenth of a second each.
func (c *Config) Lint() []Problem {
	var ps []Problem
	add := func(warning bool, key, format string, args ...any) {
		ps = append(ps, Problem{Key: key, Msg: fmt.Sprintf(format, args...), Warning: warning})
	}
	for i, a := range c.Accounts {
		key := fmt.Sprintf("account[%d]", i+1)
		lintPlaceholders(key, a, add)
		if a.OAuth() {
			lintCredentials(key, a, add)
			lintScopes(key, a, c.POP3.Listening(), add)
		}
	}
	lintWeb(c.Web, add)
	return ps
}

// lintWeb warns when [web] redirect_uri does not reach the console as
// listen serves it: another scheme than its TLS gives, or another port.
// A reverse proxy in front of the console may make either right, so
// these are warnings. relayd web-login's links use redirect_uri's
// origin, so a mismatch breaks them too.
func lintWeb(w Web, add addFunc) {
	if w.RedirectURI == "" || w.Listen == "" {
		return
	}
	u, err := url.Parse(w.RedirectURI)
	if err != nil {
		return
	}
	scheme := "http"
	if w.TLS() {
		scheme = "https"
	}
	if u.Scheme != scheme {
		add(true, "web.redirect_uri", "%q is %s, but the console serves %s (listen %s%s): the sign-in would come back to an address nothing answers, and relayd web-login's links use it too. Use %s://, unless a proxy in front of the console serves %s",
			w.RedirectURI, u.Scheme, scheme, w.Listen, map[bool]string{true: " with tls_cert", false: " without tls_cert"}[w.TLS()], scheme, u.Scheme)
	}
	_, lport, err := net.SplitHostPort(w.Listen)
	if err != nil {
		return
	}
	rport := u.Port()
	if rport == "" {
		rport = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if lport != "0" && rport != lport {
		add(true, "web.redirect_uri", "%q names port %s, but the console listens on %s: use port %s (through ssh -L, forward that port), unless a proxy in front of the console listens on %s",
			w.RedirectURI, rport, w.Listen, lport, rport)
	}
}

type addFunc func(warning bool, key, format string, args ...any)

// placeholderRe matches words example files and guides put where an id
// goes: YOUR_CLIENT_ID, client-id, <client-id>, {tenant}, xxxx, TODO.
var placeholderRe = regexp.MustCompile(`(?i)your|^(app(lication)?|client|tenant)[-_ ]?id$|change[-_ ]?me|replace|placeholder|x{4,}|todo|[<>{}]|\.\.\.|…`)

// isPlaceholder reports whether an id looks like a placeholder: one of the
// words above, or a GUID of zeros (00000000-0000-0000-0000-000000000000).
func isPlaceholder(s string) bool {
	s = strings.TrimSpace(s)
	if s == "" {
		return false
	}
	if digits := strings.ReplaceAll(s, "-", ""); len(digits) >= 8 && strings.Trim(digits, "0") == "" {
		return true
	}
	return placeholderRe.MatchString(s)
}

// exampleDomains are the domains of documentation (RFC 2606, Microsoft's
// fictitious companies): no real mailbox or tenant has them.
var exampleDomains = []string{"example.com", "example.org", "example.net", "contoso.com", "contoso.onmicrosoft.com", "fabrikam.com", "fabrikam.onmicrosoft.com"}

// exampleDomain reports whether host (or an address's domain) is one of
// exampleDomains, below one, or under .example.
func exampleDomain(s string) bool {
	if i := strings.LastIndexByte(s, '@'); i >= 0 {
		s = s[i+1:]
	}
	s = strings.ToLower(strings.TrimSuffix(s, "."))
	if s == "example" || strings.HasSuffix(s, ".example") {
		return true
	}
	for _, d := range exampleDomains {
		if s == d || strings.HasSuffix(s, "."+d) {
			return true
		}
	}
	return false
}

// lintPlaceholders names every value left as the example file has it.
func lintPlaceholders(key string, a *Account, add addFunc) {
	if a.LocalPasswordHash == ExampleHash {
		add(false, key+".local_password_hash", "this is the example file's hash, of the password \"change-me\", which everyone who read the example knows: create one for this account with 'relayd hash-password'")
	}
	if a.OAuth() && isPlaceholder(a.ClientID) {
		add(false, key+".client_id", "%s is a placeholder: %s", quoteClip(a.ClientID), clientIDHelp(a))
	}
	if a.Provider == "custom" {
		return // tests and private servers use example domains for real
	}
	if !a.tenantDefault && a.Tenant != "" && (isPlaceholder(a.Tenant) || exampleDomain(a.Tenant)) {
		add(false, key+".tenant", "%s is a placeholder: put your tenant's id (Entra admin center, Overview, Tenant ID) or its domain (e.g. yourcompany.onmicrosoft.com)", quoteClip(a.Tenant))
	}
	for _, f := range []struct{ key, val string }{{"email", a.Email}, {"login", a.Login}} {
		if f.key == "login" && a.Login == a.Email {
			continue
		}
		if exampleDomain(f.val) {
			add(false, key+"."+f.key, "%q is an example address (its domain is for documentation only): put the real address", f.val)
		}
	}
	for _, f := range []struct{ key, val string }{{"imap_server", a.IMAPServer}, {"smtp_server", a.SMTPServer}} {
		if host, _, ok := strings.Cut(f.val, ":"); ok && exampleDomain(host) {
			add(false, key+"."+f.key, "%q is an example server (its domain is for documentation only): put your server's host:port", f.val)
		}
	}
}

// clientIDHelp says where the account's provider shows the client id.
func clientIDHelp(a *Account) string {
	switch a.Provider {
	case "office365", "outlook":
		return "put the Application (client) ID of your app registration (Entra admin center, App registrations, the app, Overview), a GUID like 3f2504e0-4f89-11d3-9a0c-0305e82c3301"
	case "gmail":
		return "put the Client ID of your OAuth client (Google Cloud console, APIs & Services, Credentials), which ends in .apps.googleusercontent.com"
	}
	return "put the client id your identity provider gave the OAuth application"
}

// lintCredentials: what the provider's token endpoint will ask for.
func lintCredentials(key string, a *Account, add addFunc) {
	if a.Provider == "gmail" && a.Grant == GrantRefreshToken && a.ClientSecretFile == "" {
		add(false, key+".client_secret_file", "required for a Gmail account with grant %q: Google's token endpoint refuses a sign-in of a Desktop app OAuth client without its client secret (invalid_client). Put the client secret (Google Cloud console, APIs & Services, Credentials, the client) in a file, root:relayd 0640, and name it here", a.Grant)
	}
	if a.Provider == "office365" && a.tenantDefault {
		add(true, key+".tenant", "not set, so relayd signs in through %q: any work or school tenant, which works only for an app registration whose supported account types include accounts in any organizational directory (multi-tenant). A single-tenant registration, Entra's default, fails at sign-in with AADSTS50194: set tenant to your tenant's id or domain (e.g. yourcompany.onmicrosoft.com)", a.Tenant)
	}
}

// Scopes of the mail protocols' resource at Microsoft.
const (
	msIMAPScope = "IMAP.AccessAsUser.All"
	msSMTPScope = "SMTP.Send"
	msPOPScope  = "POP.AccessAsUser.All"
)

// msResource splits a Microsoft scope into its resource ("mail",
// "graph", or "" for the OpenID Connect scopes and offline_access) and
// its permission. A scope without a resource is Graph's (Entra's rule).
func msResource(scope string) (resource, perm string) {
	s := strings.ToLower(scope)
	switch s {
	case "offline_access", "openid", "email", "profile":
		return "", s
	}
	for _, p := range []string{"https://outlook.office.com/", "https://outlook.office365.com/"} {
		if rest, ok := strings.CutPrefix(s, p); ok {
			return "mail", rest
		}
	}
	if i := strings.LastIndexByte(s, '/'); i >= 0 {
		return "graph", s[i+1:]
	}
	return "graph", s
}

// lintScopes: the scopes must give a token the account's protocols take.
// pop3 says [pop3] listens.
func lintScopes(key string, a *Account, pop3 bool, add addFunc) {
	switch a.Provider {
	case "gmail":
		lintGoogleScopes(key+".scopes", a, add)
	case "office365", "outlook":
		lintMicrosoftScopes(key, a, pop3, add)
	}
}

func lintGoogleScopes(key string, a *Account, add addFunc) {
	for _, s := range a.Scopes {
		if strings.Contains(s, "googleapis.com/auth/gmail.") {
			add(false, key, "%q is a Gmail API scope, which IMAP and SMTP refuse: use \"https://mail.google.com/\"", s)
		}
	}
	if !slices.Contains(a.Scopes, "https://mail.google.com/") {
		add(false, key, "lacks \"https://mail.google.com/\", the only scope Gmail's IMAP and SMTP servers accept: add it (or remove scopes to use the preset)")
	}
}

func lintMicrosoftScopes(key string, a *Account, pop3 bool, add addFunc) {
	skey := key + ".scopes"
	has := map[string]bool{}
	for _, s := range a.Scopes {
		res, perm := msResource(s)
		switch {
		case res == "graph" && !a.AppOnly():
			add(false, skey, "%q is a Microsoft Graph permission, but scopes ask for the IMAP and SMTP token (https://outlook.office.com/...), and one token cannot hold both resources (AADSTS28000): remove it; to send through Graph set transport = \"graph\" (its token asks for graph_scopes)", s)
		case a.AppOnly() && perm != ".default":
			add(false, skey, "%q cannot be asked for by an app-only grant, which takes only the resource's .default scope: use [\"https://outlook.office365.com/.default\"] and grant IMAP.AccessAsApp or SMTP.SendAsApp to the app registration", s)
		case res == "mail":
			has[perm] = true
		case res == "":
			has[perm] = true
		}
	}
	if a.AppOnly() {
		return
	}
	all := has[".default"]
	if a.Direction.Incoming() && !all && !has[strings.ToLower(msIMAPScope)] {
		add(false, skey, "lacks \"https://outlook.office.com/%s\", without which Exchange refuses the IMAP login of an account with direction %q: add it (or remove scopes to use the preset)", msIMAPScope, a.Direction)
	}
	if pop3 && a.Direction.Incoming() && !all && !has[strings.ToLower(msPOPScope)] {
		add(false, skey, "lacks \"https://outlook.office.com/%s\", without which Exchange refuses the POP3 login of an account with direction %q while [pop3] listens: add it (or remove scopes to use the preset)", msPOPScope, a.Direction)
	}
	if a.Direction.Outgoing() && !a.Graph() && !all && !has[strings.ToLower(msSMTPScope)] {
		add(false, skey, "lacks \"https://outlook.office.com/%s\", without which Exchange refuses the SMTP login of an account with direction %q: add it (or remove scopes to use the preset)", msSMTPScope, a.Direction)
	}
	if !has["offline_access"] {
		add(false, skey, "lacks \"offline_access\": without it Microsoft issues no refresh token, and the grant ends with the first access token (about an hour): add it")
	}
	if a.Graph() {
		for _, s := range a.GraphScopes {
			if res, _ := msResource(s); res == "mail" {
				add(false, key+".graph_scopes", "%q is a permission of the IMAP and SMTP resource, not Graph's: graph_scopes ask for the Graph token (e.g. %q)", s, a.GraphURL+"/Mail.Send")
			}
		}
	}
}
