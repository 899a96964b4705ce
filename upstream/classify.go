package upstream

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/provider"
)

// Classify turns a server's refusal of AUTH, from any protocol, into the
// account's condition, with the one advice text of its reason:
//   - SMTP AUTH switched off for the tenant or mailbox (Exchange's
//     535 5.7.139): needs_admin, smtp_auth_disabled;
//   - a temporary refusal (SMTP 4xx, IMAP [UNAVAILABLE], POP3
//     [SYS/TEMP], [IN-USE] (RFC 3206) or [LOGIN-DELAY] (RFC 2449), or
//     Exchange's POP3 "Server Unavailable."): degraded,
//     upstream_auth_deferred;
//   - for a password account: needs_admin, upstream_rejected_password (a
//     new grant does not fix a password);
//   - else the token was refused: needs_reauth, upstream_rejected_token.
//     Exchange's POP3 "Authentication failure" says the same when POP3 is
//     switched off for the mailbox or the grant lacks POP.AccessAsUser.All,
//     so the advice names those too.
//
// refreshed says the token was refreshed once already; it changes only
// the words. The token case is reported through the token source
// (Source.Forget forgets the token; the refusal goes to the account's
// health).
func Classify(a *auth.Account, host string, r *Refusal, refreshed bool) *health.Error {
	cfg := a.Config
	// The server's words reach the log, status and a terminal: one
	// bounded line, control characters escaped.
	said := errors.New("upstream said: " + safetext.Line(r.Text))
	switch {
	case r.Code != 0 && provider.SMTPAuthDisabled(r.Code, enhanced(r.Enhanced), r.Text):
		return &health.Error{State: health.StateNeedsAdmin, Reason: health.ReasonSMTPAuthDisabled, Err: said,
			Advice: fmt.Sprintf(
				"%s has SMTP AUTH switched off for %s (535 5.7.139): an Exchange admin must enable it, e.g. Set-CASMailbox -Identity %s -SmtpClientAuthenticationDisabled $false, or for the tenant with Set-TransportConfig -SmtpClientAuthenticationDisabled $false; then run 'relayd queue release %s'. "+
					"Or send through Microsoft Graph instead: set transport = \"graph\" for account %q (needs the Mail.Send permission) and reload",
				host, cfg.Email, cfg.Email, cfg.Name, cfg.Name),
			Client: fmt.Sprintf("mailbox %q needs an administrator: see 'relayd status'", cfg.Name)}
	case r.Code/100 == 4 || temporaryText(r.Text):
		return &health.Error{State: health.StateDegraded, Reason: health.ReasonUpstreamAuthDeferred, Err: said,
			Advice: host + " refused AUTH for now; relayd retries",
			Client: "the mail server refused the login for now; try again later"}
	case a.Tokens == nil:
		return &health.Error{State: health.StateNeedsAdmin, Reason: health.ReasonUpstreamRejectedPassword, Err: said,
			Advice: fmt.Sprintf("%s refused the password in %s: put the right one there and restart relayd", host, cfg.PasswordFile),
			Client: fmt.Sprintf("mailbox %q needs an administrator: see 'relayd status'", cfg.Name)}
	}
	he := &health.Error{State: health.StateNeedsReauth, Reason: health.ReasonUpstreamRejectedToken, Err: said,
		Advice: fmt.Sprintf("%s refused a fresh token for %s; check that %s may open this mailbox, then run 'relayd authorize %s'",
			host, cfg.Email, cfg.Login, cfg.Name),
		Client: fmt.Sprintf("mailbox %q needs reauthorization: run 'relayd authorize %s'", cfg.Name, cfg.Name)}
	if provider.POP3AuthFailure(r.Text) {
		he.Advice = fmt.Sprintf("%s refused a fresh token for %s over POP3 (\"Authentication failure\"); Exchange also says this when POP3 is switched off for the mailbox "+
			"(an Exchange admin: Set-CASMailbox -Identity %s -PopEnabled $true) or when the grant lacks POP.AccessAsUser.All; check those, then run 'relayd authorize %s'",
			host, cfg.Email, cfg.Email, cfg.Name)
	}
	if !refreshed {
		he.Advice = host + " refused the access token; relayd refreshes it once and tries again"
	}
	return he
}

// temporaryText recognises the response codes of IMAP (RFC 5530
// [UNAVAILABLE]) and POP3 (RFC 3206 [SYS/TEMP], [IN-USE]; RFC 2449
// [LOGIN-DELAY]) that say a refusal is for now, and Exchange's POP3
// "Server Unavailable." (provider.POP3Unavailable).
func temporaryText(s string) bool {
	for _, code := range []string{"[UNAVAILABLE]", "[SYS/TEMP]", "[IN-USE]", "[LOGIN-DELAY]"} {
		if strings.Contains(s, code) {
			return true
		}
	}
	return provider.POP3Unavailable(s)
}

// enhanced parses "5.7.139".
func enhanced(s string) [3]int {
	var e [3]int
	for i, p := range strings.SplitN(s, ".", 3) {
		e[i], _ = strconv.Atoi(p)
	}
	return e
}
