package config

import "strings"

// preset holds a provider's endpoints, servers and scopes. Keys the account
// sets itself win over the preset.
type preset struct {
	authURL, tokenURL, deviceAuthURL string // may contain {tenant}
	scopes                           []string
	appScopes                        []string // for the client_credentials grant
	imapServer, smtpServer           string
	imapSecurity, smtpSecurity       Security
	defaultTenant                    string
}

// Microsoft's scopes for delegated IMAP, POP and SMTP access
// (PROVIDERS.md); openid and email give an ID token to check who signed in.
var microsoftScopes = []string{
	"https://outlook.office.com/IMAP.AccessAsUser.All",
	"https://outlook.office.com/POP.AccessAsUser.All",
	"https://outlook.office.com/SMTP.Send",
	"offline_access", "openid", "email",
}

const microsoftAuthority = "https://login.microsoftonline.com/{tenant}/oauth2/v2.0/"

var presets = map[string]preset{
	"office365": {
		authURL:       microsoftAuthority + "authorize",
		tokenURL:      microsoftAuthority + "token",
		deviceAuthURL: microsoftAuthority + "devicecode",
		scopes:        microsoftScopes,
		appScopes:     []string{"https://outlook.office365.com/.default"},
		imapServer:    "outlook.office365.com:993", imapSecurity: SecurityTLS,
		smtpServer: "smtp.office365.com:587", smtpSecurity: SecuritySTARTTLS,
		defaultTenant: "organizations",
	},
	"outlook": {
		authURL:       microsoftAuthority + "authorize",
		tokenURL:      microsoftAuthority + "token",
		deviceAuthURL: microsoftAuthority + "devicecode",
		scopes:        microsoftScopes,
		imapServer:    "outlook.office365.com:993", imapSecurity: SecurityTLS,
		smtpServer: "smtp-mail.outlook.com:587", smtpSecurity: SecuritySTARTTLS,
		defaultTenant: "consumers",
	},
	"gmail": {
		authURL:    "https://accounts.google.com/o/oauth2/v2/auth",
		tokenURL:   "https://oauth2.googleapis.com/token",
		scopes:     []string{"https://mail.google.com/", "openid", "email"},
		imapServer: "imap.gmail.com:993", imapSecurity: SecurityTLS,
		smtpServer: "smtp.gmail.com:465", smtpSecurity: SecurityTLS,
	},
	"password": {imapSecurity: SecurityTLS, smtpSecurity: SecuritySTARTTLS},
	"custom":   {imapSecurity: SecurityTLS, smtpSecurity: SecuritySTARTTLS},
}

func (p preset) apply(a *Account) {
	if a.Tenant == "" {
		a.Tenant = p.defaultTenant
	}
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = strings.ReplaceAll(v, "{tenant}", a.Tenant)
		}
	}
	fill(&a.AuthURL, p.authURL)
	fill(&a.TokenURL, p.tokenURL)
	fill(&a.DeviceAuthURL, p.deviceAuthURL)
	fill(&a.IMAPServer, p.imapServer)
	fill(&a.SMTPServer, p.smtpServer)
	if a.IMAPSecurity == "" {
		a.IMAPSecurity = p.imapSecurity
	}
	if a.SMTPSecurity == "" {
		a.SMTPSecurity = p.smtpSecurity
	}
	if a.Scopes == nil {
		if a.Grant == GrantClientCredentials && p.appScopes != nil {
			a.Scopes = p.appScopes
		} else {
			a.Scopes = p.scopes
		}
	}
}
