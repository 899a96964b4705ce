package health

import "testing"

// Every reason code has words, so the console never shows a bare code.
func TestReasonWords(t *testing.T) {
	for _, r := range []Reason{ReasonNoGrant, ReasonGrantRevoked, ReasonGrantExpired, ReasonGrantExpiredIdle,
		ReasonSignInFrequency, ReasonRefreshFailures, ReasonTokenEndpointUnreachable, ReasonTokenEndpointFailed,
		ReasonClientSecretExpired, ReasonClientRejected, ReasonConsentMissing, ReasonScopeRefused,
		ReasonUpstreamRejectedToken, ReasonUpstreamRejectedPassword, ReasonUpstreamAuthDeferred, ReasonSMTPAuthDisabled,
		ReasonNotConfigured, ReasonSMTPUnreachable, ReasonIMAPUnreachable, ReasonPOP3Unreachable, ReasonGraphUnreachable,
		ReasonGraphAccessDenied, ReasonGrantUndecryptable, ReasonInternal, ReasonGrantExpiresSoon, ReasonAdminHold} {
		if w := r.Words(); w == "" || w == string(r) {
			t.Errorf("Reason(%q).Words() = %q, want words", r, w)
		}
	}
	if got := Reason("new_code").Words(); got != "new_code" {
		t.Errorf("unknown reason: Words() = %q, want the code", got)
	}
}
