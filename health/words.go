package health

// Words says what a reason code means, in a few words for people: the
// web console shows it beside the state (the advice says what to do).
// An unknown code is returned as it is.
func (r Reason) Words() string {
	if w, ok := reasonWords[r]; ok {
		return w
	}
	return string(r)
}

var reasonWords = map[Reason]string{
	"":                             "",
	ReasonNoGrant:                  "nobody has signed in for this mailbox yet",
	ReasonGrantRevoked:             "the sign-in was revoked",
	ReasonGrantExpired:             "the sign-in expired",
	ReasonGrantExpiredIdle:         "the sign-in expired after going unused",
	ReasonSignInFrequency:          "a sign-in policy requires signing in again",
	ReasonRefreshFailures:          "token refreshes keep failing",
	ReasonTokenEndpointUnreachable: "the identity provider cannot be reached",
	ReasonTokenEndpointFailed:      "the identity provider answers with errors",
	ReasonClientSecretExpired:      "the app's client secret expired",
	ReasonClientRejected:           "the identity provider rejects the app",
	ReasonConsentMissing:           "an administrator's consent is missing",
	ReasonScopeRefused:             "a permission the mailbox needs was refused",
	ReasonUpstreamRejectedToken:    "the mail server rejects the sign-in",
	ReasonUpstreamRejectedPassword: "the mail server rejects the password",
	ReasonUpstreamAuthDeferred:     "the mail server deferred the login",
	ReasonSMTPAuthDisabled:         "SMTP AUTH is turned off for this mailbox or tenant",
	ReasonNotConfigured:            "the account is not fully configured",
	ReasonSMTPUnreachable:          "the outgoing mail server cannot be reached",
	ReasonIMAPUnreachable:          "the IMAP server cannot be reached",
	ReasonPOP3Unreachable:          "the POP3 server cannot be reached",
	ReasonGraphUnreachable:         "Microsoft Graph cannot be reached",
	ReasonGraphAccessDenied:        "Microsoft Graph refuses to send for this mailbox",
	ReasonGrantUndecryptable:       "the stored sign-in cannot be decrypted with relayd's key",
	ReasonInternal:                 "an internal error in relayd",
	ReasonGrantExpiresSoon:         "the sign-in will expire soon",
	ReasonAdminHold:                "an administrator held the mail",
}
