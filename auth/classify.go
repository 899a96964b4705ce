package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"golang.org/x/oauth2"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/provider"
)

// Classify decides what a token-endpoint error means for the account: its
// state, reason and advice, from the provider's error codes (package
// provider). Unknown errors are transient (degraded): retrying is safe.
func Classify(a *config.Account, err error) *health.Error {
	e := &health.Error{Account: a.Name, Err: errors.New(Describe(err))}
	reauth := func(r health.Reason, what string) *health.Error {
		e.State, e.Reason = health.StateNeedsReauth, r
		e.Advice = fmt.Sprintf("%s; run 'relayd authorize %s'", what, a.Name)
		e.Client = fmt.Sprintf("mailbox %q needs reauthorization: run 'relayd authorize %s'", a.Name, a.Name)
		return e
	}
	admin := func(r health.Reason, what string) *health.Error {
		e.State, e.Reason, e.Advice = health.StateNeedsAdmin, r, what
		e.Client = fmt.Sprintf("mailbox %q needs an administrator: see 'relayd status'", a.Name)
		return e
	}
	if errors.Is(err, errNoGrant) {
		// Nothing went wrong: nobody signed in yet. Its reason stays
		// no_grant; its words say so rather than "reauthorization".
		e.Err = nil
		e.State, e.Reason = health.StateNeedsReauth, health.ReasonNoGrant
		e.Advice = fmt.Sprintf("not authorized yet: run 'relayd authorize %s' to sign in", a.Name)
		e.Client = fmt.Sprintf("mailbox %q is not authorized yet: run 'relayd authorize %s'", a.Name, a.Name)
		return e
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.ErrorCode == "" {
		// x/oauth2/jwt leaves the body unparsed.
		var body struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		if json.Unmarshal(re.Body, &body) == nil && body.Error != "" {
			c := *re
			c.ErrorCode, c.ErrorDescription = body.Error, body.Description
			re = &c
			e.Err = errors.New(Describe(re))
		}
	}
	if re == nil {
		e.State, e.Reason = health.StateDegraded, health.ReasonTokenEndpointUnreachable
		e.Advice = fmt.Sprintf("the token endpoint %s is unreachable; relayd keeps retrying", hostOf(a.TokenURL))
		if Unreachable(a, err) != nil {
			// No answer at all (DNS, connection, TLS, a proxy): the
			// network is in the way, not the grant.
			e.Advice += "; check this machine's DNS and network; " + ProxyHint
		}
		e.Client = fmt.Sprintf("cannot get a token for mailbox %q right now, try again", a.Name)
		return e
	}
	m, known, aadsts := provider.Meaning{}, false, false
	if code, am, ok := provider.LookupAADSTS(string(re.Body)); ok {
		m, known, aadsts = am, true, true
		m.What = fmt.Sprintf("%s (AADSTS%d)", am.What, code)
	} else if gm, ok := provider.GoogleErrors[re.ErrorCode]; ok && a.Provider == "gmail" {
		m, known = gm, true
	} else if om, ok := provider.OAuthErrors[re.ErrorCode]; ok {
		m, known = om, true
		m.What = fmt.Sprintf("%s (%s)", om.What, re.ErrorCode)
		if re.ErrorCode == "invalid_grant" && strings.Contains(re.ErrorDescription, provider.GoogleRevoked) {
			m.What = "Google says the grant has expired or was revoked (a password change, a revocation, or 6 months without use)"
			if a.TestingApp {
				m.Reason = "testing_app_expired"
				m.What = "Google ended the grant: apps in \"Testing\" publishing status lose their grants 7 days after consent. " +
					"Publish the app (Google Cloud console, APIs & Services, OAuth consent screen, Publish app) so that grants last"
			}
		}
	}
	if a.AppOnly() && !aadsts &&
		(re.Response == nil || re.Response.StatusCode < 500 && re.Response.StatusCode != 429) {
		// No person's grant to renew: the app's own credentials or its
		// permissions are at fault.
		return admin("app_credentials_refused", fmt.Sprintf("the identity provider refused the app-only credentials (%s): an admin must check %s and the app's permissions for %s",
			Describe(re), appCredential(a), a.Email))
	}
	switch {
	case known && m.Fix == provider.FixAdmin:
		return admin(health.Reason(m.Reason), fmt.Sprintf("%s: an admin must %s", m.What, m.Action))
	case known && m.Fix == provider.FixReauth:
		return reauth(health.Reason(m.Reason), m.What)
	case re.Response != nil && (re.Response.StatusCode >= 500 || re.Response.StatusCode == 429 || re.Response.StatusCode == 408):
		e.State, e.Reason = health.StateDegraded, health.ReasonTokenEndpointFailed
		e.Advice = fmt.Sprintf("the token endpoint %s failed (HTTP %d); relayd keeps retrying", hostOf(a.TokenURL), re.Response.StatusCode)
		e.Client = fmt.Sprintf("cannot get a token for mailbox %q right now, try again", a.Name)
		return e
	}
	return reauth(health.ReasonGrantRevoked, "the grant was rejected")
}

// appCredential names the key holding an app-only account's credential.
func appCredential(a *config.Account) string {
	switch {
	case a.ServiceAccountFile != "":
		return "service_account_file and the domain-wide delegation of the service account's client id"
	case a.ClientCertificateFile != "":
		return "client_certificate_file (the certificate uploaded to the app registration)"
	}
	return "client_secret_file"
}

// Describe renders an error from a token or device authorization endpoint
// (an *oauth2.RetrieveError, a *url.Error, or any other) as one line for
// logs, status, the hook and the terminal, without the raw response body,
// which is not ours to vet for secrets. What the IdP wrote (error,
// error_description) is bounded and its control characters escaped here,
// once (package safetext): an IdP may send 300 KB or terminal escapes.
// Callers add no escaping of their own.
func Describe(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		s := "token endpoint said " + safetext.Clip(re.ErrorCode, 100)
		if re.ErrorCode == "" && re.Response != nil {
			s = fmt.Sprintf("token endpoint answered HTTP %d", re.Response.StatusCode)
		}
		if re.ErrorDescription != "" {
			d := re.ErrorDescription
			if i := strings.IndexAny(d, "\r\n"); i >= 0 {
				d = d[:i]
			}
			s += ": " + d
		}
		return safetext.Line(s)
	}
	if host, proxy, why, ok := unreachable(err); ok {
		if proxy != "" {
			host += " through the proxy " + proxy + " (HTTPS_PROXY)"
		}
		return safetext.Line(fmt.Sprintf("could not reach %s: %s", host, why))
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return safetext.Line(fmt.Sprintf("%s %s: %v", ue.Op, ue.URL, ue.Err))
	}
	return safetext.Line(err.Error())
}
