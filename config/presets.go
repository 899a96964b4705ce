package config

import (
	"strings"

	"github.com/relayd/relayd/provider"
)

// applyPreset fills the keys an account leaves out from its provider's
// facts (package provider). Keys the account sets itself win.
func applyPreset(p *provider.Provider, a *Account) {
	if a.Tenant == "" {
		a.Tenant, a.tenantDefault = p.DefaultTenant, p.DefaultTenant != ""
	}
	fill := func(dst *string, v string) {
		if *dst == "" {
			*dst = strings.ReplaceAll(v, "{tenant}", a.Tenant)
		}
	}
	fill(&a.AuthURL, p.AuthURL)
	fill(&a.TokenURL, p.TokenURL)
	fill(&a.DeviceAuthURL, p.DeviceAuthURL)
	fill(&a.Issuer, p.Issuer)
	a.DeviceFlow = p.DeviceFlow
	a.AuthParams = p.AuthParams
	a.RedirectHost = p.RedirectHost
	a.Flow = p.Flow
	if a.Flow == "" {
		a.Flow = provider.FlowBrowser
		if a.DeviceAuthURL != "" {
			a.Flow = provider.FlowDevice
		}
	}
	fill(&a.IMAPServer, p.IMAPServer)
	fill(&a.SMTPServer, p.SMTPServer)
	fill(&a.POP3Server, p.POP3Server)
	if a.POP3Security == "" {
		a.POP3Security = p.POP3Security
	}
	if a.IMAPSecurity == "" {
		a.IMAPSecurity = p.IMAPSecurity
	}
	if a.SMTPSecurity == "" {
		a.SMTPSecurity = p.SMTPSecurity
	}
	if a.Scopes == nil {
		if (a.Grant == GrantClientCredentials || a.Grant == GrantServiceAccount) && p.AppScopes != nil {
			a.Scopes = p.AppScopes
		} else {
			a.Scopes = p.Scopes
		}
	}
	if a.SMTPConnections == 0 {
		a.SMTPConnections = p.SMTPConnections
	}
	if a.IMAPConnections == 0 {
		a.IMAPConnections = p.IMAPConnections
	}
	if a.SMTPRate == 0 {
		a.SMTPRate = p.SMTPRate
	}
	a.TokenAuthInParams = p.AuthInParams
	a.IdleLifetime, a.TestingLifetime = p.IdleLifetime, p.TestingLifetime
	a.UpstreamPreauthTimeout = p.PreauthTimeout
}
