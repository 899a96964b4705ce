package upstream_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/upstream"
)

const mailbox = "support@example.com"

// fakeConn answers AUTH from a script shared by all connections: each
// connection takes the next answer.
type fakeConn struct {
	s      *script
	closed bool
}

type script struct {
	answers []error // per connection; nil accepts
	dials   int
	tokens  []string // the bearer tokens presented, in order
}

func (s *script) dial(context.Context) (*fakeConn, error) {
	s.dials++
	return &fakeConn{s: s}, nil
}

func (c *fakeConn) Auth(mech string, ir []byte) error {
	if mech == auth.XOAUTH2 {
		_, tok, _ := strings.Cut(string(ir), "auth=Bearer ")
		c.s.tokens = append(c.s.tokens, strings.TrimRight(tok, "\x01"))
	}
	i := len(c.s.tokens) - 1
	if mech != auth.XOAUTH2 {
		i = c.s.dials - 1
	}
	if i < len(c.s.answers) {
		return c.s.answers[i]
	}
	return nil
}

func (c *fakeConn) Close() error { c.closed = true; return nil }

// oauthAccount is an account with a working grant at a fake IdP.
func oauthAccount(t *testing.T) (*auth.Account, *testkit.IdP) {
	t.Helper()
	b := relaytest.New(t)
	a := b.Account(testkit.Account{SMTPServer: "smtp.example.com:587", Security: "tls", Direction: "outgoing"}, relaytest.AccountOptions{})
	return a.Account, b.IdP
}

var (
	refused535 = &upstream.Refusal{Code: 535, Enhanced: "5.7.3", Text: "535 5.7.3 Authentication unsuccessful"}
	disabled   = &upstream.Refusal{Code: 535, Enhanced: "5.7.139", Text: "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."}
	deferred   = &upstream.Refusal{Code: 454, Enhanced: "4.7.0", Text: "454 4.7.0 Temporary authentication failure"}
	imapNo     = &upstream.Refusal{Text: "NO [AUTHENTICATIONFAILED] Invalid credentials"}
	imapLater  = &upstream.Refusal{Text: "NO [UNAVAILABLE] try again later"}
)

// A refused token is refreshed once and tried on a new connection; what
// happens then decides the account's condition.
func TestLoginRefreshesOnceOnAFreshConnection(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answers   []error
		dials     int
		state     health.State
		reason    health.Reason
		refreshed bool
	}{
		{"accepted", nil, 1, health.StateOK, "", false},
		{"refused, then accepted with a fresh token", []error{refused535}, 2, health.StateOK, "", true},
		{"IMAP refusal, then accepted", []error{imapNo}, 2, health.StateOK, "", true},
		{"refused twice", []error{refused535, refused535}, 2, health.StateNeedsReauth, health.ReasonUpstreamRejectedToken, true},
		{"connection lost after a refusal", []error{refused535, errors.New("EOF")}, 2, health.StateNeedsReauth, health.ReasonUpstreamRejectedToken, true},
		{"SMTP AUTH disabled: no refresh", []error{disabled}, 1, health.StateNeedsAdmin, health.ReasonSMTPAuthDisabled, false},
		{"SMTP 4xx: no refresh", []error{deferred}, 1, health.StateDegraded, health.ReasonUpstreamAuthDeferred, false},
		{"IMAP [UNAVAILABLE]: no refresh", []error{imapLater}, 1, health.StateDegraded, health.ReasonUpstreamAuthDeferred, false},
		{"connection lost during AUTH: an outage", []error{errors.New("read: connection reset by peer")}, 1, health.StateDegraded, health.ReasonSMTPUnreachable, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := oauthAccount(t)
			s := &script{answers: tc.answers}
			c, err := upstream.Login(context.Background(), a, health.SourceSMTP, "smtp.example.com", s.dial)
			if s.dials != tc.dials {
				t.Errorf("dials = %d, want %d", s.dials, tc.dials)
			}
			if refreshed := len(s.tokens) == 2 && s.tokens[0] != s.tokens[1]; refreshed != tc.refreshed {
				t.Errorf("tokens presented %d (refreshed %v), want refreshed %v", len(s.tokens), refreshed, tc.refreshed)
			}
			snap := a.Health.Snapshot()
			if snap.State != tc.state || snap.Reason != tc.reason {
				t.Errorf("account = %s (%s), want %s (%s)", snap.State, snap.Reason, tc.state, tc.reason)
			}
			if tc.state == health.StateOK {
				if err != nil || c == nil {
					t.Fatalf("Login() = %v, %v; want a connection", c, err)
				}
				return
			}
			he := health.AsError(err)
			if he == nil || he.Reason != tc.reason {
				t.Fatalf("Login() error = %v, want the condition %s", err, tc.reason)
			}
			if he.Client == "" || strings.Contains(he.Client, "smtp.example.com") {
				t.Errorf("client text %q: want words for the client, no configuration", he.Client)
			}
		})
	}
}

// A password account's refusal needs an admin (a new grant does not fix a
// password); a server that cannot be reached is an outage, reported.
func TestLoginPasswordAndOutage(t *testing.T) {
	cfg := testkit.Account{Name: "scanner", Provider: "password", Email: "scanner@example.com", PasswordFile: "unread",
		SMTPServer: "smtp.example.com:587", Security: "tls", Direction: "outgoing", LocalPasswordHash: testkit.UnusedHash}.Parsed(t)
	a := &auth.Account{Config: cfg, Password: "pw", Health: health.New("scanner", health.Options{})}
	s := &script{answers: []error{refused535}}
	_, err := upstream.Login(context.Background(), a, health.SourceSMTP, "smtp.example.com", s.dial)
	if he := health.AsError(err); he == nil || he.State != health.StateNeedsAdmin || he.Reason != health.ReasonUpstreamRejectedPassword {
		t.Errorf("refused password: %v, want needs_admin upstream_rejected_password", err)
	}
	down := func(context.Context) (*fakeConn, error) { return nil, errors.New("connect: connection refused") }
	_, err = upstream.Login(context.Background(), a, health.SourceSMTP, "smtp.example.com", down)
	if he := health.AsError(err); he == nil || !he.Outage() || !strings.Contains(he.Advice, "smtp.example.com:587") {
		t.Errorf("unreachable: %v, want an outage naming the address", err)
	}
	if s := a.Health.Snapshot(); s.Reason != health.ReasonSMTPUnreachable && s.Reason != health.ReasonUpstreamRejectedPassword {
		t.Errorf("account = %s", s.Reason)
	}
}

// What an upstream server says reaches status and terminals on one bounded
// line with its control characters escaped.
func TestRefusalTextBoundedAndEscaped(t *testing.T) {
	a, _ := oauthAccount(t)
	nasty := &upstream.Refusal{Text: "NO [AUTHENTICATIONFAILED] \x1b[2J\x1b]0;pwned\x07\r" + strings.Repeat("x", 300<<10)}
	s := &script{answers: []error{nasty, nasty}}
	upstream.Login(context.Background(), a, health.SourceIMAP, "imap.example.com", s.dial)
	snap := a.Health.Snapshot()
	if snap.Reason != health.ReasonUpstreamRejectedToken {
		t.Fatalf("reason = %s", snap.Reason)
	}
	if strings.ContainsAny(snap.LastError, "\x1b\x07\r") || len(snap.LastError) > 2000 {
		t.Errorf("last error (%d bytes) holds control characters or is unbounded: %q", len(snap.LastError), snap.LastError[:min(len(snap.LastError), 200)])
	}
}

// A context that ended (relayd stopping) is no condition of the account:
// nothing is reported, and the caller gets ctx.Err().
func TestLoginCancelledIsNoCondition(t *testing.T) {
	a, _ := oauthAccount(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	down := func(ctx context.Context) (*fakeConn, error) { return nil, ctx.Err() }
	if _, err := upstream.Login(ctx, a, health.SourceSMTP, "smtp.example.com", down); !errors.Is(err, context.Canceled) {
		t.Errorf("Login with a cancelled context = %v, want context.Canceled", err)
	}
	if s := a.Health.Snapshot(); s.State != health.StateOK || s.LastError != "" {
		t.Errorf("account after a cancelled login: %s %q, want ok with nothing recorded", s.State, s.LastError)
	}
}
