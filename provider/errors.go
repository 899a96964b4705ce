package provider

import (
	"strconv"
	"strings"
	"time"
)

// Fix is who can fix an account condition.
type Fix int

// Who fixes a condition.
const (
	FixRetry  Fix = iota // transient: relayd retries by itself
	FixReauth            // a new grant: relayd authorize NAME
	FixAdmin             // only an administrator (of the tenant or the app)
)

// Meaning is what a provider's error code means for an account.
type Meaning struct {
	// Reason is the stable reason code relayd reports (status JSON, logs).
	Reason string
	Fix    Fix
	// What happened, in words, e.g. "the client secret has expired".
	What string
	// Action is what the admin must do, for FixAdmin; empty otherwise.
	Action string
}

// AADSTS are the Microsoft Entra token-endpoint error codes relayd knows,
// found in the error_description and error_codes of an error response.
var AADSTS = map[int]Meaning{
	70008:  {Reason: "grant_expired_idle", Fix: FixReauth, What: "the grant expired after 90 days without use"},
	700082: {Reason: "grant_expired_idle", Fix: FixReauth, What: "the grant expired after 90 days without use"},
	50173:  {Reason: "credentials_changed", Fix: FixReauth, What: "the grant was revoked because the password changed (or an admin revoked it)"},
	50076:  {Reason: "mfa_required", Fix: FixReauth, What: "a new multi-factor authentication requirement applies to the sign-in"},
	50079:  {Reason: "mfa_required", Fix: FixReauth, What: "the user must register for multi-factor authentication"},
	70043:  {Reason: "signin_frequency", Fix: FixReauth, What: "a Conditional Access sign-in frequency policy ended the grant"},
	65001: {Reason: "consent_missing", Fix: FixAdmin, What: "the application has no consent for these permissions",
		Action: "grant admin consent for the application's permissions (Entra admin center, App registrations, the app, API permissions, Grant admin consent), or let the user consent at the next 'relayd authorize'"},
	50194: {Reason: "tenant_required", Fix: FixAdmin, What: "the app registration is single-tenant (Entra's default), so it cannot sign in through \"organizations\" or \"common\"",
		Action: "set tenant to the tenant id or domain the app is registered in (its Overview page, Directory (tenant) ID), or make the registration multi-tenant (Authentication, Supported account types)"},
	700016: {Reason: "client_unknown", Fix: FixAdmin, What: "no application with this client id is registered in the tenant",
		Action: "check client_id (the app registration's Application (client) ID) and tenant (the directory it is registered in); an app for personal accounts only needs provider \"outlook\""},
	53003: {Reason: "conditional_access_blocked", Fix: FixAdmin, What: "a Conditional Access policy blocked the sign-in",
		Action: "allow this application and location in the tenant's Conditional Access policies"},
	7000215: {Reason: "client_secret_invalid", Fix: FixAdmin, What: "the client secret is wrong",
		Action: "put the app registration's current secret value (not its id) in client_secret_file"},
	7000222: {Reason: "client_secret_expired", Fix: FixAdmin, What: "the client secret has expired",
		Action: "create a new secret for the app registration and put it in client_secret_file"},
	7000218: {Reason: "public_client_disallowed", Fix: FixAdmin, What: "the app registration wants a client secret or certificate: it does not allow public client flows",
		Action: "enable 'Allow public client flows' (the app registration's Authentication page) for the device flow, or put a client secret in client_secret_file"},
}

// GoogleRevoked is the error_description Google's token endpoint gives
// with invalid_grant for a grant that expired or was revoked (password
// change, revocation, 6 months unused, 7 days for an app in Testing).
const GoogleRevoked = "Token has been expired or revoked."

// SignInFrequency extracts the policy's maximum grant lifetime from an
// AADSTS70043 message ("... the maximum allowed lifetime for this request
// is 43200."), or 0.
func SignInFrequency(body string) time.Duration {
	const marker = "maximum allowed lifetime for this request is "
	i := strings.Index(body, marker)
	if i < 0 {
		return 0
	}
	rest := body[i+len(marker):]
	n := 0
	for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
		n++
	}
	secs, err := strconv.Atoi(rest[:n])
	if err != nil || secs <= 0 {
		return 0
	}
	return time.Duration(secs) * time.Second
}

// OAuthErrors are the meanings of RFC 6749 §5.2 error codes, used when no
// provider-specific code says more.
var OAuthErrors = map[string]Meaning{
	"invalid_grant": {Reason: "grant_revoked", Fix: FixReauth, What: "the grant was rejected: it expired or was revoked"},
	"invalid_client": {Reason: "client_rejected", Fix: FixAdmin, What: "the token endpoint rejected the client",
		Action: "check client_id and client_secret_file"},
	"unauthorized_client": {Reason: "client_rejected", Fix: FixAdmin, What: "the client may not use this grant",
		Action: "check the app registration's allowed flows"},
	"invalid_scope": {Reason: "scope_refused", Fix: FixAdmin, What: "the token endpoint refused the scopes",
		Action: "grant the application its permissions"},
	"access_denied": {Reason: "consent_missing", Fix: FixAdmin, What: "access was denied",
		Action: "grant the application its permissions"},
	"consent_required": {Reason: "consent_missing", Fix: FixAdmin, What: "consent is required",
		Action: "grant consent for the application's permissions"},
}

// GoogleErrors are what the errors of Google's sign-in page and token
// endpoint mean for a Gmail account, beyond OAuthErrors: each comes from
// an OAuth client set up the wrong way.
var GoogleErrors = map[string]Meaning{
	"invalid_client": {Reason: "client_rejected", Fix: FixAdmin, What: "Google does not know this OAuth client, or its secret is wrong (invalid_client)",
		Action: "check client_id and the secret in client_secret_file against the OAuth client (Google Cloud console, APIs & Services, Credentials), a client of type Desktop app"},
	"redirect_uri_mismatch": {Reason: "client_rejected", Fix: FixAdmin, What: "the OAuth client does not accept relayd's loopback redirect (redirect_uri_mismatch)",
		Action: "use an OAuth client of type Desktop app, which takes http://127.0.0.1 on any port (a Web application client needs http://127.0.0.1:PORT among its redirect URIs and redirect_port = PORT)"},
	"access_denied": {Reason: "consent_missing", Fix: FixAdmin, What: "Google denied access (access_denied): an app in Testing publishing status lets only its test users sign in, or the person declined",
		Action: "add the mailbox as a test user (Google Cloud console, APIs & Services, OAuth consent screen, Test users) or publish the app, and accept the permissions at the next 'relayd authorize'"},
}

// Explain says what a sign-in or token-endpoint error means and what to
// do, for an account of provider prov: from an AADSTS code in text (the
// error description or body), else from code in the provider's table
// (Google's), for the errors a wrong app registration produces. "" when
// nothing more is known.
func Explain(prov, code, text string) string {
	if _, m, ok := LookupAADSTS(text); ok && m.Action != "" {
		return m.What + ": " + m.Action
	}
	if prov == "gmail" {
		if m, ok := GoogleErrors[code]; ok {
			return m.What + ": " + m.Action
		}
	}
	return ""
}

// LookupAADSTS finds a known AADSTS code in a token-endpoint error body.
func LookupAADSTS(body string) (code int, m Meaning, ok bool) {
	for rest := body; ; {
		i := strings.Index(rest, "AADSTS")
		if i < 0 {
			return 0, Meaning{}, false
		}
		rest = rest[i+len("AADSTS"):]
		n := 0
		for n < len(rest) && rest[n] >= '0' && rest[n] <= '9' {
			n++
		}
		c, err := strconv.Atoi(rest[:n])
		if m, ok := AADSTS[c]; ok && err == nil {
			return c, m, true
		}
	}
}

// SMTPAuthDisabled recognises Exchange Online's refusal of SMTP AUTH for a
// tenant or mailbox: 535 5.7.139 "SmtpClientAuthentication is disabled",
// and 550 5.7.30 "Basic authentication is not supported for Client
// Submission".
func SMTPAuthDisabled(code int, enhanced [3]int, msg string) bool {
	return enhanced == [3]int{5, 7, 139} || enhanced == [3]int{5, 7, 30} ||
		strings.Contains(msg, "SmtpClientAuthentication is disabled")
}

// SMTPThrottle recognises quota and throttling replies, which defer mail
// rather than bounce it even with a 5xx code: Exchange's 554 5.2.0
// ...SubmissionQuotaExceeded, Gmail's 550 5.4.5 daily sending limit.
func SMTPThrottle(code int, enhanced [3]int, msg string) bool {
	return strings.Contains(msg, "SubmissionQuotaExceeded") ||
		enhanced == [3]int{5, 4, 5} || enhanced == [3]int{4, 4, 5}
}

// POP3AuthFailure recognises Exchange Online's POP3 refusal of AUTH
// XOAUTH2 (reported): "-ERR Authentication failure: unknown user name or
// bad password." It carries no RFC 3206 response code, and Exchange says
// the same for a refused token, for a mailbox with POP3 switched off
// (Set-CASMailbox -PopEnabled $false) and for a token without
// POP.AccessAsUser.All.
func POP3AuthFailure(text string) bool {
	return strings.Contains(text, "Authentication failure")
}

// POP3Unavailable recognises Exchange Online's POP3 answer when the
// mailbox's server cannot serve it for now (reported): "-ERR Server
// Unavailable. 21" (the number varies). A retry later works.
func POP3Unavailable(text string) bool {
	return strings.Contains(text, "Server Unavailable.")
}
