package health

import (
	"errors"
	"fmt"
)

// Reason is a stable code for why an account is not ok. Monitoring may
// match on it; the words for people are in the advice.
type Reason string

// Reason codes. Provider error codes map onto these in package provider.
const (
	ReasonNoGrant                  Reason = "no_grant"
	ReasonGrantRevoked             Reason = "grant_revoked"
	ReasonGrantExpired             Reason = "grant_expired"
	ReasonGrantExpiredIdle         Reason = "grant_expired_idle"
	ReasonSignInFrequency          Reason = "signin_frequency"
	ReasonRefreshFailures          Reason = "refresh_failures"
	ReasonTokenEndpointUnreachable Reason = "token_endpoint_unreachable"
	ReasonTokenEndpointFailed      Reason = "token_endpoint_failed"
	ReasonClientSecretExpired      Reason = "client_secret_expired"
	ReasonClientRejected           Reason = "client_rejected"
	ReasonConsentMissing           Reason = "consent_missing"
	ReasonScopeRefused             Reason = "scope_refused"
	ReasonUpstreamRejectedToken    Reason = "upstream_rejected_token"
	ReasonUpstreamRejectedPassword Reason = "upstream_rejected_password"
	ReasonUpstreamAuthDeferred     Reason = "upstream_auth_deferred"
	ReasonSMTPAuthDisabled         Reason = "smtp_auth_disabled"
	ReasonNotConfigured            Reason = "not_configured"
	ReasonSMTPUnreachable          Reason = "smtp_unreachable"
	ReasonIMAPUnreachable          Reason = "imap_unreachable"
	ReasonPOP3Unreachable          Reason = "pop3_unreachable"
	ReasonGraphUnreachable         Reason = "graph_unreachable"
	// Microsoft Graph refused the mailbox's requests: permission missing
	// (403 ErrorAccessDenied, a token without Mail.Send).
	ReasonGraphAccessDenied Reason = "graph_access_denied"
	// ReasonGrantUndecryptable: the grant file is encrypted under a key
	// relayd does not have (key_file missing or replaced, a wrong
	// credential) or was copied from another account's name. needs_admin;
	// the file is kept as it is.
	ReasonGrantUndecryptable Reason = "grant_undecryptable"
	ReasonInternal           Reason = "internal_error"
	ReasonGrantExpiresSoon   Reason = "grant_expires_soon"
	// ReasonAdminHold is why mail waits that an admin held (relayd queue
	// hold ACCOUNT); it is no condition of the account.
	ReasonAdminHold Reason = "admin_hold"
)

// Error is an account condition: not a failure of one connection or one
// message, but something about the account that stays until it is fixed
// or passes. It carries who is affected, the resulting state, a stable
// reason, the admin's advice, and a short text that is safe to send to a
// downstream client (it names no client id, file or host of a secret).
type Error struct {
	Account string
	State   State
	Reason  Reason
	// Advice tells the admin what happened and what to do next. It may
	// name configuration (files, client ids): logs and status only.
	Advice string
	// Client is what a downstream client may be told.
	Client string
	// Err is the underlying error, for logs.
	Err error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return fmt.Sprintf("account %q: %s", e.Account, e.Advice)
	}
	return fmt.Sprintf("account %q: %s: %v", e.Account, e.Advice, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// Outage reports whether e is an upstream server that cannot be reached
// (smtp_unreachable, imap_unreachable, pop3_unreachable, graph_unreachable): the account is degraded, and
// disconnected once the outage outlasts the retry budget, but its mail is
// never held for it: delivery is deferred and lifetimes keep running, as
// in Postfix.
func (e *Error) Outage() bool {
	return e.Reason == ReasonSMTPUnreachable || e.Reason == ReasonIMAPUnreachable ||
		e.Reason == ReasonPOP3Unreachable || e.Reason == ReasonGraphUnreachable
}

// Unreachable is the condition of an account whose upstream server at
// addr, seen at src (SourceSMTP, SourceIMAP, SourcePOP3 or SourceGraph), could not be reached:
// dialing, TLS, the greeting or a timeout failed with err, or the
// connection was lost during AUTH before any refusal (package upstream).
// The first success at src clears it.
func Unreachable(src Source, addr string, err error) *Error {
	reason, what, key := ReasonSMTPUnreachable, "SMTP", "smtp_server"
	switch src {
	case SourceIMAP:
		reason, what, key = ReasonIMAPUnreachable, "IMAP", "imap_server"
	case SourcePOP3:
		reason, what, key = ReasonPOP3Unreachable, "POP3", "pop3_server"
	case SourceGraph:
		reason, what, key = ReasonGraphUnreachable, "Microsoft Graph", "graph_url"
	}
	advice := fmt.Sprintf("the upstream %s server %s cannot be reached; relayd keeps trying. Check the network, DNS, a firewall or proxy on the way, and %s", what, addr, key)
	if src == SourceSMTP || src == SourceGraph {
		advice += "; outgoing mail stays queued (nothing bounces until its lifetime ends)"
	}
	return &Error{State: StateDegraded, Reason: reason, Advice: advice,
		Client: "the mail server is unreachable; try again later", Err: err}
}

// Temporary reports whether the condition may pass by itself, so retrying
// later makes sense: true for degraded, false when a person must act.
func (e *Error) Temporary() bool {
	return e.State == StateDegraded || e.State == StateDisconnected || e.State == StateOK
}

// Detail is the underlying error's text, or "".
func (e *Error) Detail() string {
	if e.Err == nil {
		return ""
	}
	return e.Err.Error()
}

// Temporary reports whether err means "try again later". Errors that do
// not say (no Temporary method) are temporary: for mail, retrying is the
// safe answer.
func Temporary(err error) bool {
	var t interface{ Temporary() bool }
	if errors.As(err, &t) {
		return t.Temporary()
	}
	return true
}

// AsError returns the account condition in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}
