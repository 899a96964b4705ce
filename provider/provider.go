// Package provider is data only: for each mail provider relayd knows, its
// OAuth 2.0 endpoints and scopes, how it wants client credentials sent, its
// IMAP, POP3 and SMTP servers, its sending limits, the grants it allows, and what
// its error codes mean. Adding a provider is one entry in Known.
//
// Facts come from the providers' documentation unless a comment says
// "(reported)": those come from captured sessions in public issue threads.
// docs/providers.md has the sources.
package provider

import (
	"slices"
	"time"
)

const day = 24 * time.Hour

// Security is how relayd protects a connection to an upstream server.
type Security string

// Connection security modes.
const (
	SecurityTLS      Security = "tls"      // implicit TLS
	SecuritySTARTTLS Security = "starttls" // plaintext, then STARTTLS (RFC 3207, RFC 2595)
	SecurityNone     Security = "none"     // plaintext; loopback servers only
)

// Interactive sign-in flows.
const (
	FlowDevice  = "device"  // RFC 8628 device authorization
	FlowBrowser = "browser" // authorization code with PKCE (RFC 7636) and a loopback redirect (RFC 8252)
)

// Grant types.
const (
	GrantRefreshToken      = "refresh_token"      // delegated: a user's grant
	GrantClientCredentials = "client_credentials" // app-only (Microsoft): a secret or a certificate
	GrantServiceAccount    = "service_account"    // app-only (Google Workspace): domain-wide delegation
)

// Provider is what relayd knows about one provider. Account keys an admin
// sets win over these.
type Provider struct {
	Name string
	// OAuth is false for "password": the upstream takes a plain password.
	OAuth bool
	// AuthURL, TokenURL and DeviceAuthURL may contain {tenant}.
	AuthURL, TokenURL, DeviceAuthURL string
	// DefaultTenant fills {tenant} when the account names none.
	DefaultTenant string
	// Scopes are requested for a delegated grant; AppScopes for the
	// client_credentials grant.
	Scopes, AppScopes []string
	// AuthInParams sends the client id and secret in the token request's
	// body rather than with HTTP Basic: Microsoft's token endpoint wants
	// that.
	AuthInParams bool
	// Grants the provider allows; the first is the default.
	Grants []string
	// TenantRequired: the client_credentials grant needs a real tenant,
	// not one of these multi-tenant aliases.
	MultiTenantAliases []string

	// Issuer is the OpenID Connect issuer whose discovery document
	// (Issuer + "/.well-known/openid-configuration") gives the keys that
	// sign ID tokens; may contain {tenant}. Microsoft's multi-tenant
	// documents name "{tenantid}" in the issuer, which the token's tid
	// claim fills.
	Issuer string
	// Flow is the interactive sign-in used by default: FlowDevice or
	// FlowBrowser. DeviceFlow is false where the provider refuses the
	// device flow for the mail scopes (Google).
	Flow       string
	DeviceFlow bool
	// AuthParams are added to the authorization request (and the device
	// authorization request) beside login_hint.
	AuthParams map[string]string
	// RedirectHost is the host of the loopback redirect URI as the
	// provider wants it registered: Microsoft "localhost", Google
	// "127.0.0.1".
	RedirectHost string

	// IdleLifetime is how long a grant lives unused (Microsoft 90 days,
	// Google 6 months); TestingLifetime how long a grant of an app in
	// testing lives (Google: 7 days). Zero: unknown.
	IdleLifetime, TestingLifetime time.Duration

	IMAPServer, SMTPServer     string
	IMAPSecurity, SMTPSecurity Security
	// POP3Server and POP3Security are the provider's POP3 server, for
	// relayd's POP3 listener ([pop3]).
	POP3Server   string
	POP3Security Security
	// SMTPConnections is the most concurrent SMTP connections per mailbox;
	// SMTPRate the most messages per minute (0: no limit).
	SMTPConnections, SMTPRate int
	// IMAPConnections is the most concurrent IMAP connections per mailbox
	// the provider takes (0: unknown, no limit).
	IMAPConnections int
	// PreauthTimeout is how long the provider's IMAP and POP3 servers
	// keep a connection that has not logged in (0: unknown).
	PreauthTimeout time.Duration
	// Graph: the provider's mailboxes can send through Microsoft Graph
	// sendMail (transport = "graph").
	Graph bool
}

// GraphConcurrency is how many requests Microsoft Graph serves at once
// per app and mailbox (throttling limits: 4 for Outlook resources); more
// get 429.
const GraphConcurrency = 4

// AllowsGrant reports whether the provider allows grant g.
func (p *Provider) AllowsGrant(g string) bool { return slices.Contains(p.Grants, g) }

// Microsoft's delegated scopes for IMAP, POP and SMTP; openid, email and
// profile give an ID token to check who signed in.
var microsoftScopes = []string{
	"https://outlook.office.com/IMAP.AccessAsUser.All",
	"https://outlook.office.com/POP.AccessAsUser.All",
	"https://outlook.office.com/SMTP.Send",
	"offline_access", "openid", "email", "profile",
}

// IdentityScopes are the scopes an interactive grant adds so that an ID
// token says who signed in.
var IdentityScopes = []string{"openid", "email", "profile"}

const microsoftAuthority = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"

// Known are the providers, by the name an account's provider key uses.
var Known = map[string]*Provider{
	"office365": microsoft(Provider{
		Name: "office365", DefaultTenant: "organizations",
		AppScopes: []string{"https://outlook.office365.com/.default"},
		Grants:    []string{GrantRefreshToken, GrantClientCredentials},
		// Client credentials are issued by one tenant.
		MultiTenantAliases: []string{"organizations", "common", "consumers"},
		SMTPServer:         "smtp.office365.com:587",
	}),
	"outlook": microsoft(Provider{
		Name: "outlook", DefaultTenant: "consumers",
		Grants:     []string{GrantRefreshToken},
		SMTPServer: "smtp-mail.outlook.com:587",
	}),
	"gmail": {
		Name: "gmail", OAuth: true,
		AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL: "https://oauth2.googleapis.com/token",
		Issuer:   "https://accounts.google.com",
		// 6 months unused; 7 days for an app in "Testing".
		IdleLifetime: 182 * day, TestingLifetime: 7 * day,
		Grants: []string{GrantRefreshToken, GrantServiceAccount},
		// Google refuses the device flow for https://mail.google.com/, and
		// returns a refresh token only with access_type=offline, and again
		// only when the consent screen is shown.
		Flow:         FlowBrowser,
		AuthParams:   map[string]string{"prompt": "consent", "access_type": "offline"},
		RedirectHost: "127.0.0.1",
		// Narrower Gmail API scopes are refused by IMAP and SMTP.
		Scopes:     []string{"https://mail.google.com/", "openid", "email"},
		AppScopes:  []string{"https://mail.google.com/"},
		IMAPServer: "imap.gmail.com:993", IMAPSecurity: SecurityTLS,
		POP3Server: "pop.gmail.com:995", POP3Security: SecurityTLS,
		SMTPServer: "smtp.gmail.com:465", SMTPSecurity: SecurityTLS,
		// Gmail documents 15 IMAP connections per account; 5 SMTP
		// connections stay well inside its limits (relayd's choice).
		SMTPConnections: 5, IMAPConnections: 15,
	},
	"password": {
		Name: "password", IMAPSecurity: SecurityTLS, SMTPSecurity: SecuritySTARTTLS, POP3Security: SecurityTLS,
		SMTPConnections: 2,
	},
	"custom": {
		// Flow: the device flow when device_auth_url is set, else the
		// browser (config decides).
		Name: "custom", OAuth: true, DeviceFlow: true, RedirectHost: "127.0.0.1", Graph: true,
		Grants:       []string{GrantRefreshToken, GrantClientCredentials, GrantServiceAccount},
		IMAPSecurity: SecurityTLS, SMTPSecurity: SecuritySTARTTLS, POP3Security: SecurityTLS,
		SMTPConnections: 2,
	},
}

// microsoft fills in what Microsoft's two providers (work or school, and
// Outlook.com) share.
func microsoft(p Provider) *Provider {
	p.OAuth = true
	p.AuthURL = microsoftAuthority + "authorize"
	p.TokenURL = microsoftAuthority + "token"
	p.DeviceAuthURL = microsoftAuthority + "devicecode"
	p.IdleLifetime = 90 * day
	p.Issuer = "https://login.microsoftonline.com/{tenant}/v2.0"
	p.Flow, p.DeviceFlow = FlowDevice, true
	p.AuthParams = map[string]string{"prompt": "select_account"}
	p.RedirectHost = "localhost"
	p.Scopes = microsoftScopes
	p.AuthInParams = true
	p.Graph = true
	p.IMAPServer, p.IMAPSecurity = "outlook.office365.com:993", SecurityTLS
	p.POP3Server, p.POP3Security = "outlook.office365.com:995", SecurityTLS
	p.SMTPSecurity = SecuritySTARTTLS
	// Exchange Online: 3 concurrent SMTP connections per mailbox (more
	// get 432 4.3.2), 30 messages a minute. 20 IMAP connections per
	// mailbox is the commonly reported limit, not in current
	// documentation.
	p.SMTPConnections, p.SMTPRate, p.IMAPConnections = 3, 30, 20
	// Exchange closes a connection that has not logged in after 60 s
	// (its "unauthenticated time-out", IMAP4 and POP3 alike), and commands
	// sent meanwhile do not extend it: a warm connection is replaced.
	p.PreauthTimeout = 60 * time.Second
	return &p
}

// Names lists the known providers in the order documentation uses.
var Names = []string{"office365", "outlook", "gmail", "password", "custom"}

// Lookup returns the provider named name.
func Lookup(name string) (*Provider, bool) {
	p, ok := Known[name]
	return p, ok
}
