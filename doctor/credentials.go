package doctor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/proxy"
	smtptransport "github.com/relayd/relayd/transport/smtp"
)

// Credentials runs the checks of account a that need its tokens (or its
// password): the grant refreshed once through a.Tokens (Source.Check,
// which stores a rotated refresh token as every refresh does), the scopes
// granted against those the account needs, an IMAP and an SMTP login made
// as relayd's proxy and SMTP transport make them (package upstream), and
// for a Graph account the Graph token's Mail.Send, and with o.SendTest a
// test message (SendTest). The refresh reports to
// the account's condition as any refresh does; the logins report to a
// throwaway one, so that doctor neither holds nor releases the account's
// mail. Nothing returned holds a token.
func Credentials(ctx context.Context, a *auth.Account, o Options) []Result {
	o = o.withDefaults()
	cfg := a.Config
	name := cfg.Name
	var rs []Result
	loginsSkipped := ""
	if a.Tokens != nil {
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		chk, err := a.Tokens.Check(cctx, auth.ResourceMail)
		cancel()
		if err != nil {
			rs = append(rs, grantFailed(cfg, err), skip(name, "scopes", "no access token: the grant check failed"))
			loginsSkipped = "no access token: the grant check failed"
		} else {
			rs = append(rs, grantPassed(cfg, chk, o), Scopes(cfg, chk.Scopes, chk.Token))
		}
	}
	// The logins report to a condition of their own, not the account's.
	shadow := *a
	shadow.Health = health.New(name, health.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var logins []func() Result
	if cfg.Direction.Incoming() {
		logins = append(logins, func() Result {
			if loginsSkipped != "" {
				return skip(name, "login.imap", loginsSkipped)
			}
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			defer cancel()
			return loginResult(&shadow, "imap", proxy.CheckLogin(cctx, &shadow, o.Dialer, o.Timeout))
		})
	}
	if cfg.Direction.Outgoing() && !cfg.Graph() {
		logins = append(logins, func() Result {
			if loginsSkipped != "" {
				return skip(name, "login.smtp", loginsSkipped)
			}
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			defer cancel()
			t := smtptransport.New(smtptransport.Options{Hostname: hostname(), Timeout: o.Timeout, Dialer: o.Dialer})
			c, err := t.Open(cctx, &shadow)
			if err == nil {
				c.Close()
			}
			return loginResult(&shadow, "smtp", err)
		})
	}
	if cfg.Graph() && a.Tokens != nil {
		logins = append(logins, func() Result {
			if loginsSkipped != "" {
				return skip(name, "graph.mail_send", loginsSkipped)
			}
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			defer cancel()
			tok, err := a.Tokens.TokenFor(cctx, auth.ResourceGraph)
			if err != nil {
				return graphTokenFailed(cfg, err)
			}
			return GraphPermission(cfg, tok)
		})
	}
	if o.SendTest && cfg.Direction.Outgoing() {
		logins = append(logins, func() Result {
			if loginsSkipped != "" {
				return skip(name, "send_test", loginsSkipped)
			}
			cctx, cancel := context.WithTimeout(ctx, o.Timeout)
			defer cancel()
			return SendTest(cctx, &shadow, o)
		})
	}
	out := make([]Result, len(logins))
	var wg sync.WaitGroup
	for i, f := range logins {
		wg.Go(func() { out[i] = f() })
	}
	wg.Wait()
	return append(rs, out...)
}

func grantPassed(a *config.Account, chk auth.Checked, o Options) Result {
	what := "refreshed the grant"
	if a.AppOnly() {
		what = fmt.Sprintf("got a token with the app-only credentials (%s)", a.Grant)
	}
	d := fmt.Sprintf("%s at %s", what, hostOf(a.TokenURL))
	if !chk.Expiry.IsZero() {
		d += fmt.Sprintf("; the access token is good for %s", chk.Expiry.Sub(o.Now()).Round(time.Minute))
	}
	if chk.Rotated {
		d += "; the provider rotated the refresh token, and the new one is stored"
	}
	return pass(a.Name, "grant", d)
}

func grantFailed(a *config.Account, err error) Result {
	he := health.AsError(err)
	if he == nil {
		return fail(a.Name, "grant", fmt.Sprintf("refreshing at %s: %v", hostOf(a.TokenURL), err), "run 'relayd doctor' again; if this persists, see 'relayd status'")
	}
	d := fmt.Sprintf("%s refused the grant: %s", hostOf(a.TokenURL), words(he))
	if he.Temporary() {
		d = fmt.Sprintf("could not refresh at %s: %s", hostOf(a.TokenURL), words(he))
	}
	return fail(a.Name, "grant", d, he.Advice)
}

// words says an account condition in one line: its reason and what the
// far side said.
func words(he *health.Error) string {
	s := string(he.Reason)
	if d := he.Detail(); d != "" {
		s += " (" + d + ")"
	}
	return s
}

func hostOf(u string) string {
	u = strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}

// identityScopes ask for an ID token or a refresh token, not for access
// to a resource: token endpoints leave them out of "scope".
var identityScopes = []string{"openid", "email", "profile", "offline_access"}

// NeededScopes are the scopes of a's configuration that its use of the
// mail resource needs: IMAP's for an incoming account, SMTP's for one
// that sends over SMTP, any other a custom account asks for. Identity
// scopes, POP3's (relayd has no POP3 yet) and app-only ".default" are
// left out.
func NeededScopes(a *config.Account) []string {
	var need []string
	for _, s := range a.Scopes {
		base := s[strings.LastIndexByte(s, '/')+1:]
		switch {
		case slices.Contains(identityScopes, strings.ToLower(s)):
		case strings.EqualFold(base, ".default"), strings.EqualFold(base, "POP.AccessAsUser.All"):
		case strings.EqualFold(base, "IMAP.AccessAsUser.All") && !a.Direction.Incoming():
		case strings.EqualFold(base, "SMTP.Send") && (!a.Direction.Outgoing() || a.Graph()):
		default:
			need = append(need, s)
		}
	}
	return need
}

// sameScope: Microsoft may answer a scope with another spelling of its
// resource (outlook.office.com, outlook.office365.com): a permission
// matches by its name after the resource.
func sameScope(want, got string) bool {
	if strings.EqualFold(want, got) {
		return true
	}
	i, j := strings.LastIndexByte(want, '/'), strings.LastIndexByte(got, '/')
	return i >= 0 && j >= 0 && strings.EqualFold(want[i+1:], got[j+1:])
}

// Scopes compares the scopes the token endpoint said it granted (nil: it
// did not say, RFC 6749 §5.1) with those account a needs (NeededScopes),
// for the mail resource. token, the access token, is read as a JWT's
// "scp" when the endpoint said nothing.
func Scopes(a *config.Account, granted []string, token string) Result {
	need := NeededScopes(a)
	from := "the token endpoint"
	if granted == nil {
		if p, err := ReadPermissions(token); err == nil && (len(p.Scopes) > 0 || len(p.Roles) > 0) {
			granted, from = append(p.Scopes, p.Roles...), "the access token"
		}
	}
	if len(need) == 0 && !a.AppOnly() {
		return pass(a.Name, "scopes", "the account's configuration asks for no scope of the mail resource to compare with")
	}
	if a.AppOnly() && len(need) == 0 {
		return pass(a.Name, "scopes", "app-only: the app's own permissions apply; the logins show whether they suffice")
	}
	if granted == nil {
		return pass(a.Name, "scopes", fmt.Sprintf("the token endpoint did not list the scopes granted, which means those asked for (RFC 6749 §5.1): %s", strings.Join(need, " ")))
	}
	var missing []string
	for _, w := range need {
		if !slices.ContainsFunc(granted, func(g string) bool { return sameScope(w, g) }) {
			missing = append(missing, w)
		}
	}
	if len(missing) == 0 {
		return pass(a.Name, "scopes", fmt.Sprintf("%s granted every scope needed: %s", from, strings.Join(need, " ")))
	}
	return fail(a.Name, "scopes", fmt.Sprintf("the grant lacks %s (%s granted: %s)", strings.Join(missing, ", "), from, strings.Join(granted, " ")),
		fmt.Sprintf("consent to %s: run 'relayd authorize %s' and accept every permission the sign-in asks for; where users may not consent (a Microsoft tenant's policy), an admin grants consent for the app %s (Entra admin center → Enterprise applications → Permissions → Grant admin consent)",
			strings.Join(missing, ", "), a.Name, a.ClientID))
}

// GraphPermission checks that token, account a's access token for
// Microsoft Graph, allows Graph sendMail: Mail.Send among its delegated
// scopes ("scp") or its app roles ("roles"). The token is read, not
// verified (ReadPermissions), and never shown.
func GraphPermission(a *config.Account, token string) Result {
	p, err := ReadPermissions(token)
	if err != nil {
		return warn(a.Name, "graph.mail_send", "the Microsoft Graph token is not a JWT: its permissions cannot be read here", "")
	}
	if p.Has("Mail.Send") {
		how := "a delegated scope"
		if !slices.ContainsFunc(p.Scopes, func(s string) bool { return strings.EqualFold(s, "Mail.Send") }) {
			how = "an application role"
		}
		return pass(a.Name, "graph.mail_send", fmt.Sprintf("the Microsoft Graph token holds Mail.Send (%s)", how))
	}
	has := "scp: " + strings.Join(p.Scopes, " ") + "; roles: " + strings.Join(p.Roles, " ")
	fix := fmt.Sprintf("grant Microsoft Graph's delegated permission Mail.Send to the app %s with admin consent (Entra admin center → App registrations → API permissions → Grant admin consent), or run 'relayd authorize --browser %s' so that the sign-in asks for it; or set transport = \"smtp\"", a.ClientID, a.Name)
	if a.AppOnly() {
		fix = fmt.Sprintf("give the app %s the application permission Mail.Send of Microsoft Graph and grant admin consent (an application access policy may limit it to some mailboxes); or set transport = \"smtp\"", a.ClientID)
	}
	return fail(a.Name, "graph.mail_send", "the Microsoft Graph token lacks Mail.Send, which transport = \"graph\" needs ("+has+")", fix)
}

func graphTokenFailed(a *config.Account, err error) Result {
	he := health.AsError(err)
	if he == nil {
		return fail(a.Name, "graph.mail_send", fmt.Sprintf("no Microsoft Graph token: %v", err), "")
	}
	return fail(a.Name, "graph.mail_send", "no Microsoft Graph token: "+words(he), he.Advice)
}

// loginResult says the outcome of a login at the account's proto server
// in words: SMTP AUTH disabled (535 5.7.139), a token refused (Exchange's
// 535 5.7.3 or "NO AUTHENTICATE failed."), a password refused, a refusal
// for now, a server out of reach.
func loginResult(a *auth.Account, proto string, err error) Result {
	cfg := a.Config
	check := "login." + proto
	server, key := cfg.IMAPServer, "imap_server"
	if proto == "smtp" {
		server, key = cfg.SMTPServer, "smtp_server"
	}
	mech := "XOAUTH2"
	if a.Tokens == nil {
		mech = "PLAIN"
	}
	if err == nil {
		return pass(cfg.Name, check, fmt.Sprintf("logged in at %s as %s (%s)", server, cfg.Email, mech))
	}
	he := health.AsError(err)
	if he == nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fail(cfg.Name, check, fmt.Sprintf("no login at %s within the time allowed", server), fmt.Sprintf("check %s and the network path to it", key))
		}
		return fail(cfg.Name, check, fmt.Sprintf("login at %s: %v", server, err), "")
	}
	said := he.Detail()
	switch he.Reason {
	case health.ReasonSMTPAuthDisabled:
		fix := he.Advice
		if !strings.Contains(fix, `transport = "graph"`) {
			fix += `; or, instead of asking the tenant's admin, send this account's mail through Microsoft Graph: set transport = "graph" (the app needs Graph's Mail.Send permission)`
		}
		return fail(cfg.Name, check, fmt.Sprintf("SMTP AUTH is disabled for %s or its tenant (535 5.7.139): no SMTP login can work (%s)", cfg.Email, said), fix)
	case health.ReasonUpstreamRejectedToken:
		refusal := `Exchange says "NO AUTHENTICATE failed."`
		fix := he.Advice + fmt.Sprintf("; for Exchange, also check that IMAP is enabled for the mailbox (Get-CASMailbox %s) and that the app has IMAP.AccessAsUser.All", cfg.Email)
		if proto == "smtp" {
			refusal = `Exchange says "535 5.7.3 Authentication unsuccessful"`
			fix = he.Advice + fmt.Sprintf("; for Exchange, also check that the app has SMTP.Send and that %s may send as %s", cfg.Login, cfg.Email)
		}
		return fail(cfg.Name, check, fmt.Sprintf("authentication failed: %s refused a freshly refreshed token, as %s for a token it does not accept (%s)", server, refusal, said), fix)
	case health.ReasonUpstreamRejectedPassword:
		return fail(cfg.Name, check, fmt.Sprintf("authentication failed: %s refused the password (%s)", server, said), he.Advice)
	case health.ReasonUpstreamAuthDeferred:
		return warn(cfg.Name, check, fmt.Sprintf("%s refused the login for now (%s)", server, said), "try again later; relayd retries by itself")
	}
	if he.Outage() {
		return fail(cfg.Name, check, fmt.Sprintf("cannot reach %s to log in (%s)", server, said), he.Advice)
	}
	return fail(cfg.Name, check, fmt.Sprintf("no login at %s: %s", server, words(he)), he.Advice)
}
