// Package provider is data only: for each mail provider relayd knows, its
// OAuth 2.0 endpoints and scopes, how it wants client credentials sent, its
// IMAP and SMTP servers, its sending limits, the grants it allows, and what
// its error codes mean. Adding a provider is one entry in Known.
//
// Facts come from the providers' documentation unless a comment says
// "(reported)": those come from captured sessions in public issue threads.
// PROVIDERS.md in the shared design notes has the sources.
package provider

import "slices"

// Security is how relayd protects a connection to an upstream server.
type Security string

// Connection security modes.
const (
	SecurityTLS      Security = "tls"      // implicit TLS
	SecuritySTARTTLS Security = "starttls" // plaintext, then STARTTLS (RFC 3207, RFC 2595)
	SecurityNone     Security = "none"     // plaintext; loopback servers only
)

// Grant types.
const (
	GrantRefreshToken      = "refresh_token"      // delegated: a user's grant
	GrantClientCredentials = "client_credentials" // app-only (Microsoft)
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

	IMAPServer, SMTPServer     string
	IMAPSecurity, SMTPSecurity Security
	// SMTPConnections is the most concurrent SMTP connections per mailbox;
	// SMTPRate the most messages per minute (0: no limit).
	SMTPConnections, SMTPRate int
}

// AllowsGrant reports whether the provider allows grant g.
func (p *Provider) AllowsGrant(g string) bool { return slices.Contains(p.Grants, g) }

// Microsoft's delegated scopes for IMAP, POP and SMTP; openid and email
// give an ID token to check who signed in.
var microsoftScopes = []string{
	"https://outlook.office.com/IMAP.AccessAsUser.All",
	"https://outlook.office.com/POP.AccessAsUser.All",
	"https://outlook.office.com/SMTP.Send",
	"offline_access", "openid", "email",
}

const microsoftAuthority = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"

// Known are the providers, by the name an account's provider key uses.
var Known = map[string]*Provider{
	"office365": {
		Name: "office365", OAuth: true,
		AuthURL:       microsoftAuthority + "authorize",
		TokenURL:      microsoftAuthority + "token",
		DeviceAuthURL: microsoftAuthority + "devicecode",
		DefaultTenant: "organizations",
		Scopes:        microsoftScopes,
		AppScopes:     []string{"https://outlook.office365.com/.default"},
		AuthInParams:  true,
		Grants:        []string{GrantRefreshToken, GrantClientCredentials},
		// Client credentials are issued by one tenant.
		MultiTenantAliases: []string{"organizations", "common", "consumers"},
		IMAPServer:         "outlook.office365.com:993", IMAPSecurity: SecurityTLS,
		SMTPServer: "smtp.office365.com:587", SMTPSecurity: SecuritySTARTTLS,
		// Exchange Online: 3 concurrent SMTP connections per mailbox
		// (more get 432 4.3.2), 30 messages a minute.
		SMTPConnections: 3, SMTPRate: 30,
	},
	"outlook": {
		Name: "outlook", OAuth: true,
		AuthURL:       microsoftAuthority + "authorize",
		TokenURL:      microsoftAuthority + "token",
		DeviceAuthURL: microsoftAuthority + "devicecode",
		DefaultTenant: "consumers",
		Scopes:        microsoftScopes,
		AuthInParams:  true,
		Grants:        []string{GrantRefreshToken},
		IMAPServer:    "outlook.office365.com:993", IMAPSecurity: SecurityTLS,
		SMTPServer: "smtp-mail.outlook.com:587", SMTPSecurity: SecuritySTARTTLS,
		SMTPConnections: 3, SMTPRate: 30,
	},
	"gmail": {
		Name: "gmail", OAuth: true,
		AuthURL:  "https://accounts.google.com/o/oauth2/v2/auth",
		TokenURL: "https://oauth2.googleapis.com/token",
		// Narrower Gmail API scopes are refused by IMAP and SMTP.
		Scopes:     []string{"https://mail.google.com/", "openid", "email"},
		Grants:     []string{GrantRefreshToken},
		IMAPServer: "imap.gmail.com:993", IMAPSecurity: SecurityTLS,
		SMTPServer: "smtp.gmail.com:465", SMTPSecurity: SecurityTLS,
		// Gmail documents 15 IMAP connections per account; 5 SMTP
		// connections stay well inside its limits (relayd's choice).
		SMTPConnections: 5,
	},
	"password": {
		Name: "password", IMAPSecurity: SecurityTLS, SMTPSecurity: SecuritySTARTTLS,
		SMTPConnections: 2,
	},
	"custom": {
		Name: "custom", OAuth: true,
		Grants:       []string{GrantRefreshToken, GrantClientCredentials},
		IMAPSecurity: SecurityTLS, SMTPSecurity: SecuritySTARTTLS,
		SMTPConnections: 2,
	},
}

// Names lists the known providers in the order documentation uses.
var Names = []string{"office365", "outlook", "gmail", "password", "custom"}

// Lookup returns the provider named name.
func Lookup(name string) (*Provider, bool) {
	p, ok := Known[name]
	return p, ok
}
