package doctor_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/doctor"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/registry"
)

// fixture is one account against the fakes: an IMAP and an SMTP upstream
// checking tokens at the fake IdP.
type fixture struct {
	e    *relaytest.Env
	imap *testkit.IMAPUpstream
	smtp *testkit.SMTPUpstream
}

func newFixture(t *testing.T) *fixture {
	e := relaytest.New(t)
	f := &fixture{e: e, imap: e.IMAPUpstream(testkit.IMAPOptions{Style: testkit.Exchange}),
		smtp: e.SMTPUpstream(testkit.SMTPOptions{Style: testkit.Exchange})}
	f.imap.AddUser(relaytest.Mailbox)
	return f
}

// account builds account "support" (direction both, plaintext fakes),
// with edit applied to its configuration.
func (f *fixture) account(edit func(*config.Account)) *registry.Account {
	return f.e.Account(testkit.Account{IMAPServer: f.imap.Addr, SMTPServer: f.smtp.Addr, Security: "none", Direction: "both"},
		relaytest.AccountOptions{Edit: edit})
}

// svc is a service user that is neither root nor the files' owner.
var svc = &doctor.User{Name: "relayd-test", UID: 4242, GIDs: []int{4242}}

// run runs every check of acct, its token checks in this process.
func run(t *testing.T, acct *registry.Account, o doctor.Options) []doctor.Result {
	t.Helper()
	if o.ServiceUser == nil {
		o.ServiceUser = &doctor.User{Name: "root", UID: 0, GIDs: []int{0}}
	}
	o.Timeout = 5 * time.Second
	rs := doctor.Account(context.Background(), acct.Config, func(ctx context.Context, _ *config.Account) []doctor.Result {
		return doctor.Credentials(ctx, acct.Account, o)
	}, o)
	var b bytes.Buffer
	doctor.Write(&b, rs)
	t.Logf("doctor:\n%s", b.String())
	return rs
}

func find(t *testing.T, rs []doctor.Result, check string) doctor.Result {
	t.Helper()
	for _, r := range rs {
		if r.Check == check {
			return r
		}
	}
	t.Fatalf("no result for check %q", check)
	return doctor.Result{}
}

// wantFailed: check failed, and its detail and fix name the cause.
func wantFailed(t *testing.T, rs []doctor.Result, check string, detail, fix []string) {
	t.Helper()
	r := find(t, rs, check)
	if !r.Failed() {
		t.Fatalf("%s: %+v, want a failure", check, r)
	}
	for _, s := range detail {
		if !strings.Contains(r.Detail, s) {
			t.Errorf("%s: detail %q does not say %q", check, r.Detail, s)
		}
	}
	for _, s := range fix {
		if !strings.Contains(r.Fix, s) {
			t.Errorf("%s: fix %q does not say %q", check, r.Fix, s)
		}
	}
	if doctor.Code(rs) != doctor.ExitFailed {
		t.Errorf("exit code %d, want %d", doctor.Code(rs), doctor.ExitFailed)
	}
}

func TestDoctorAllPass(t *testing.T) {
	f := newFixture(t)
	acct := f.account(nil)
	refreshes := f.e.IdP.Refreshes()
	rs := run(t, acct, doctor.Options{})
	for _, r := range rs {
		if !r.OK || r.Warn || r.Skipped {
			t.Errorf("%s: %+v, want a pass", r.Check, r)
		}
	}
	for _, c := range []string{"dns.imap", "tcp.imap", "tls.imap", "tcp.smtp", "token_endpoint", "clock", "grant", "scopes", "login.imap", "login.smtp"} {
		find(t, rs, c)
	}
	if doctor.Code(rs) != doctor.ExitOK {
		t.Errorf("exit code %d", doctor.Code(rs))
	}
	// One refresh proves the grant; the logins use its token.
	if n := f.e.IdP.Refreshes() - refreshes; n != 1 {
		t.Errorf("%d refreshes, want 1", n)
	}
	if f.imap.Logins.Load() != 1 || f.smtp.Logins.Load() != 1 {
		t.Errorf("upstream logins: IMAP %d, SMTP %d; want one each", f.imap.Logins.Load(), f.smtp.Logins.Load())
	}
	// The rotated refresh token was stored by the source: a second run
	// refreshes again.
	if rs := run(t, acct, doctor.Options{}); !find(t, rs, "grant").OK {
		t.Errorf("second run: %+v", find(t, rs, "grant"))
	}
}

// tlsAccount is an account whose IMAP upstream serves cert (nil: a fresh
// self-signed one for 127.0.0.1) with implicit TLS, trusting caPEM.
func tlsAccount(t *testing.T, f *fixture, cert *tls.Certificate, caPEM []byte) *registry.Account {
	up := f.e.IMAPUpstream(testkit.IMAPOptions{Style: testkit.Exchange, TLS: true, Certificate: cert})
	up.AddUser(relaytest.Mailbox)
	if caPEM == nil {
		caPEM = up.CertPEM
	}
	return f.e.Account(testkit.Account{IMAPServer: up.Addr, Security: "tls", Direction: "incoming"},
		relaytest.AccountOptions{Edit: func(a *config.Account) { f.e.TrustCA(a, caPEM) }})
}

func TestDoctorTLS(t *testing.T) {
	f := newFixture(t)
	t.Run("trusted", func(t *testing.T) {
		rs := run(t, tlsAccount(t, f, nil, nil), doctor.Options{CertWarning: time.Hour})
		if r := find(t, rs, "tls.imap"); !r.OK || r.Warn {
			t.Errorf("%+v", r)
		}
		if r := find(t, rs, "login.imap"); !r.OK {
			t.Errorf("%+v", r)
		}
	})
	t.Run("expired", func(t *testing.T) {
		cert, _, err := testkit.SelfSignedValid("127.0.0.1", time.Now().Add(-60*24*time.Hour), time.Now().Add(-30*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		rs := run(t, tlsAccount(t, f, &cert, nil), doctor.Options{})
		wantFailed(t, rs, "tls.imap", []string{"expired on", "30 days ago"}, []string{"renew the certificate of 127.0.0.1"})
	})
	t.Run("expires soon", func(t *testing.T) {
		cert, _, err := testkit.SelfSignedValid("127.0.0.1", time.Now().Add(-time.Hour), time.Now().Add(3*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		rs := run(t, tlsAccount(t, f, &cert, nil), doctor.Options{})
		if r := find(t, rs, "tls.imap"); !r.Warn || !strings.Contains(r.Detail, "expires in") {
			t.Errorf("%+v", r)
		}
	})
	t.Run("wrong CA", func(t *testing.T) {
		_, other, err := testkit.SelfSigned("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		rs := run(t, tlsAccount(t, f, nil, other), doctor.Options{})
		wantFailed(t, rs, "tls.imap", []string{"signed by an unknown CA", "ca_file"}, []string{"put the CA that signed 127.0.0.1's certificate (PEM) in ca_file"})
		// The login fails on the same certificate, as an outage.
		if r := find(t, rs, "login.imap"); !r.Failed() || !strings.Contains(r.Detail, "cannot reach") {
			t.Errorf("login.imap: %+v", r)
		}
	})
	t.Run("wrong name", func(t *testing.T) {
		cert, pem, err := testkit.SelfSignedValid("mail.example.net", time.Now().Add(-time.Hour), time.Now().Add(90*24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		rs := run(t, tlsAccount(t, f, &cert, pem), doctor.Options{})
		wantFailed(t, rs, "tls.imap", []string{"is for mail.example.net, not 127.0.0.1", "wrong name"}, []string{"set imap_server to a name the certificate holds"})
	})
}

func TestDoctorRevokedGrant(t *testing.T) {
	f := newFixture(t)
	acct := f.account(nil)
	f.e.IdP.Revoke(relaytest.Mailbox)
	rs := run(t, acct, doctor.Options{})
	wantFailed(t, rs, "grant", []string{"refused the grant", "grant_expired_idle", "AADSTS70008"}, []string{"relayd authorize support"})
	for _, c := range []string{"scopes", "login.imap", "login.smtp"} {
		if r := find(t, rs, c); !r.Skipped {
			t.Errorf("%s: %+v, want skipped after the grant failed", c, r)
		}
	}
	if f.imap.Logins.Load()+f.imap.Failures.Load()+f.smtp.Failures.Load() != 0 {
		t.Error("an upstream login was tried without a token")
	}
}

func TestDoctorMissingScope(t *testing.T) {
	f := newFixture(t)
	const imapScope, smtpScope = "https://outlook.office.com/IMAP.AccessAsUser.All", "https://outlook.office.com/SMTP.Send"
	acct := f.account(func(a *config.Account) {
		a.Scopes = []string{imapScope, smtpScope, "https://outlook.office.com/POP.AccessAsUser.All", "offline_access", "openid"}
	})
	// The user consented to IMAP only (another spelling of the resource).
	f.e.IdP.SetGrantedScopes(relaytest.Mailbox, "https://outlook.office365.com/IMAP.AccessAsUser.All offline_access")
	rs := run(t, acct, doctor.Options{})
	wantFailed(t, rs, "scopes", []string{"lacks " + smtpScope}, []string{"consent to " + smtpScope, "relayd authorize support", "admin grants consent"})
	if r := find(t, rs, "scopes"); strings.Contains(r.Detail, "lacks https://outlook.office.com/IMAP") || strings.Contains(r.Detail, "POP") && strings.Contains(r.Detail, "lacks https://outlook.office.com/POP") {
		t.Errorf("scopes: %q names a scope that is granted or not needed", r.Detail)
	}
	// An incoming-only account does not need SMTP.Send.
	in := f.e.Account(testkit.Account{Name: "in", IMAPServer: f.imap.Addr, Security: "none", Direction: "incoming"},
		relaytest.AccountOptions{Edit: func(a *config.Account) { a.Scopes = []string{imapScope, smtpScope} }})
	if r := find(t, run(t, in, doctor.Options{}), "scopes"); !r.OK {
		t.Errorf("incoming account: %+v", r)
	}
}

func TestDoctorSMTPAuthDisabled(t *testing.T) {
	f := newFixture(t)
	acct := f.account(nil)
	f.smtp.FailAuth(testkit.ErrSMTPAuthDisabled)
	rs := run(t, acct, doctor.Options{})
	wantFailed(t, rs, "login.smtp", []string{"SMTP AUTH is disabled", "5.7.139"}, []string{"Set-CASMailbox", `transport = "graph"`})
	if r := find(t, rs, "login.imap"); !r.OK {
		t.Errorf("login.imap: %+v", r)
	}
	// doctor's logins do not become the account's condition: no hold.
	if c := acct.Health.Condition(health.SourceSMTP); c != nil {
		t.Errorf("the SMTP condition changed to %v: doctor must not hold mail", c)
	}
}

func TestDoctorTokenRefused(t *testing.T) {
	f := newFixture(t)
	acct := f.account(nil)
	f.e.IdP.SetGrantedScopes(relaytest.Mailbox, "x") // keep the grant; refuse its tokens upstream below
	up := f.e.IMAPUpstream(testkit.IMAPOptions{Style: testkit.Exchange})
	// A mailbox the upstream does not have refuses every token for it.
	acct.Config.IMAPServer = up.Addr
	rs := run(t, acct, doctor.Options{})
	wantFailed(t, rs, "login.imap", []string{"authentication failed", "AUTHENTICATE failed"}, []string{"relayd authorize support", "Get-CASMailbox"})
}

func TestDoctorSecretFiles(t *testing.T) {
	f := newFixture(t)
	secret := filepath.Join(f.e.Dir, "client.secret")
	os.WriteFile(secret, []byte("s3cret\n"), 0o600)
	f.e.IdP.AddClient("confidential", "s3cret")
	acct := f.e.Account(testkit.Account{ClientID: "confidential", ClientSecretFile: secret, TokenURL: f.e.IdP.TokenURL(),
		IMAPServer: f.imap.Addr, Security: "none", Direction: "incoming"}, relaytest.AccountOptions{})
	// Readable by the service user through an open path.
	os.Chmod(f.e.Dir, 0o755)
	os.Chmod(filepath.Dir(f.e.Dir), 0o755)
	os.Chown(secret, 0, svc.GIDs[0])
	os.Chmod(secret, 0o640)
	if r := doctor.Files(acct.Config, svc)[0]; !r.OK {
		t.Fatalf("root:relayd 0640: %+v", r)
	}
	t.Run("world-readable", func(t *testing.T) {
		os.Chmod(secret, 0o644)
		defer os.Chmod(secret, 0o640)
		rs := doctor.Files(acct.Config, svc)
		wantFailed(t, rs, "file.client_secret_file", []string{secret, "everyone may read it"}, []string{"chmod o-r " + secret})
	})
	t.Run("unreadable", func(t *testing.T) {
		os.Chmod(secret, 0o600)
		defer os.Chmod(secret, 0o640)
		rs := doctor.Files(acct.Config, svc)
		wantFailed(t, rs, "file.client_secret_file", []string{"relayd-test (uid 4242), who runs relayd, cannot read it"}, []string{"chmod g+r " + secret})
	})
	t.Run("missing", func(t *testing.T) {
		os.Rename(secret, secret+".away")
		defer os.Rename(secret+".away", secret)
		rs := doctor.Files(acct.Config, svc)
		wantFailed(t, rs, "file.client_secret_file", []string{"no such file"}, []string{"client_secret_file"})
	})
	// No secret in anything doctor says.
	b, _ := json.Marshal(run(t, acct, doctor.Options{ServiceUser: svc}))
	for _, s := range append(f.e.IdP.Issued(), "s3cret") {
		if strings.Contains(string(b), s) {
			t.Errorf("a secret appears in doctor's results")
		}
	}
}

// skewedEndpoint is a token endpoint whose clock is off by skew.
func skewedEndpoint(t *testing.T, skew time.Duration) string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Date", time.Now().Add(skew).UTC().Format(http.TimeFormat))
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"error":"invalid_request"}`))
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/token"
}

func TestDoctorClock(t *testing.T) {
	f := newFixture(t)
	for _, tc := range []struct {
		skew       time.Duration
		ok, warned bool
		says       string
	}{
		{0, true, false, "within"},
		{-2 * time.Minute, true, true, "ahead of 127.0.0.1 (more than a minute)"},
		{10 * time.Minute, false, false, "behind 127.0.0.1 (more than 5 minutes)"},
	} {
		url := skewedEndpoint(t, tc.skew)
		a := f.e.Account(testkit.Account{IMAPServer: f.imap.Addr, Security: "none", Direction: "incoming"},
			relaytest.AccountOptions{Edit: func(a *config.Account) { a.TokenURL = url }, NoGrant: true})
		rs := doctor.Account(context.Background(), a.Config, nil, doctor.Options{ServiceUser: svc})
		r := find(t, rs, "clock")
		if r.OK != tc.ok || r.Warn != tc.warned || !strings.Contains(r.Detail, tc.says) {
			t.Errorf("skew %s: %+v", tc.skew, r)
		}
		if !tc.ok && !strings.Contains(r.Fix, "timedatectl set-ntp true") {
			t.Errorf("skew %s: fix %q", tc.skew, r.Fix)
		}
		if r := find(t, rs, "token_endpoint"); !r.OK {
			t.Errorf("token_endpoint: %+v", r)
		}
	}
}

func TestDoctorUnreachable(t *testing.T) {
	f := newFixture(t)
	dead := f.e.DeadAddr()
	acct := f.account(func(a *config.Account) { a.SMTPServer = dead })
	rs := run(t, acct, doctor.Options{})
	wantFailed(t, rs, "tcp.smtp", []string{"cannot connect to " + dead, "connection refused"}, []string{"firewall"})
	if r := find(t, rs, "tls.smtp"); !r.Skipped {
		t.Errorf("tls.smtp: %+v", r)
	}
	if r := find(t, rs, "login.smtp"); !r.Failed() || !strings.Contains(r.Detail, "cannot reach") {
		t.Errorf("login.smtp: %+v", r)
	}
}

func jwt(claims string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc([]byte(claims)) + ".c2ln"
}

func TestGraphPermission(t *testing.T) {
	a := &config.Account{Name: "support", ClientID: "app-1"}
	for _, tc := range []struct {
		name, token string
		ok, warned  bool
		says        string
	}{
		{"delegated", jwt(`{"aud":"https://graph.microsoft.com","scp":"Mail.Read Mail.Send User.Read"}`), true, false, "delegated scope"},
		{"app role", jwt(`{"aud":"00000003-0000-0000-c000-000000000000","roles":["Mail.Send"]}`), true, false, "application role"},
		{"missing", jwt(`{"scp":"Mail.Read User.Read"}`), false, false, "lacks Mail.Send"},
		{"opaque", "EwBwA8l6BAAU-opaque", true, true, "not a JWT"},
		{"garbled", "a.!!!.c", true, true, "not a JWT"},
	} {
		r := doctor.GraphPermission(a, tc.token)
		if r.OK != tc.ok || r.Warn != tc.warned || !strings.Contains(r.Detail, tc.says) {
			t.Errorf("%s: %+v", tc.name, r)
		}
		if strings.Contains(r.Detail+r.Fix, tc.token) {
			t.Errorf("%s: the token appears in the result", tc.name)
		}
		if !tc.ok && !strings.Contains(r.Fix, "Mail.Send") {
			t.Errorf("%s: fix %q", tc.name, r.Fix)
		}
	}
}

// A Graph account's Graph token is checked for Mail.Send, against the
// fake Graph endpoint's resource at the fake IdP (whose Graph tokens are
// JWTs with scp): held, not held, consent withheld.
func TestDoctorGraphAccount(t *testing.T) {
	f := newFixture(t)
	g := testkit.StartGraph(t, f.e.IdP)
	graph := func(scopes ...string) *registry.Account {
		return f.account(func(a *config.Account) {
			a.Transport, a.GraphURL, a.GraphScopes = config.TransportGraph, g.URL, append(scopes, "offline_access")
		})
	}
	rs := run(t, graph(g.Scope()), doctor.Options{})
	if r := find(t, rs, "graph.mail_send"); !r.OK || r.Warn || !strings.Contains(r.Detail, "holds Mail.Send (a delegated scope)") {
		t.Errorf("graph.mail_send: %+v", r)
	}
	for _, r := range rs {
		if r.Check == "login.smtp" || r.Check == "tcp.smtp" {
			t.Errorf("a Graph account's SMTP was checked: %+v", r)
		}
		if r.Failed() {
			t.Errorf("%s: %+v", r.Check, r)
		}
	}
	find(t, rs, "tls.graph")

	rs = run(t, graph(g.URL+"/Mail.Read"), doctor.Options{})
	wantFailed(t, rs, "graph.mail_send", []string{"lacks Mail.Send", "scp: Mail.Read"}, []string{"Mail.Send", "admin consent", `transport = "smtp"`})

	f.e.IdP.WithholdConsent(g.Scope())
	rs = run(t, graph(g.Scope()), doctor.Options{})
	wantFailed(t, rs, "graph.mail_send", []string{"no Microsoft Graph token", "consent_missing"}, []string{"Mail.Send", "relayd authorize --browser support"})
}

// --send-test sends one message from the mailbox to itself through the
// account's transport and says what the upstream answered; without it,
// nothing is sent.
func TestDoctorSendTest(t *testing.T) {
	f := newFixture(t)
	g := testkit.StartGraph(t, f.e.IdP)
	acct := f.account(nil)
	rs := run(t, acct, doctor.Options{})
	for _, r := range rs {
		if r.Check == "send_test" {
			t.Errorf("a test message without --send-test: %+v", r)
		}
	}
	if n := len(f.smtp.Messages()); n != 0 {
		t.Fatalf("doctor sent %d messages without --send-test", n)
	}
	rs = run(t, acct, doctor.Options{SendTest: true})
	if r := find(t, rs, "send_test"); !r.OK || !strings.Contains(r.Detail, "through SMTP") {
		t.Errorf("send_test over SMTP: %+v", r)
	}
	if m := f.smtp.Messages(); len(m) != 1 || m[0].To[0] != relaytest.Mailbox || !bytes.Contains(m[0].Data, []byte("relayd doctor --send-test")) {
		t.Errorf("SMTP upstream got %+v", m)
	}

	graph := f.account(func(a *config.Account) {
		a.Transport, a.GraphURL, a.GraphScopes = config.TransportGraph, g.URL, []string{g.Scope(), "offline_access"}
	})
	rs = run(t, graph, doctor.Options{SendTest: true})
	if r := find(t, rs, "send_test"); !r.OK || !strings.Contains(r.Detail, "through Microsoft Graph") || !strings.Contains(r.Detail, "202") {
		t.Errorf("send_test over Graph: %+v", r)
	}
	if s := g.Sent(); len(s) != 1 || s[0].Recipients[0] != relaytest.Mailbox {
		t.Errorf("Graph got %+v", s)
	}
	g.FailNext(1, 403, "ErrorSendAsDenied", "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account.", "")
	rs = run(t, graph, doctor.Options{SendTest: true})
	wantFailed(t, rs, "send_test", []string{"ErrorSendAsDenied"}, []string{"Send As"})
}
