package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

const (
	testMailbox  = "support@example.com"
	testUser     = "helpdesk"
	testPassword = "legacy-pw"
)

type relayOpts struct {
	style          testkit.Style
	noSASLIR, tls  bool
	idleTimeout    time.Duration
	preauthTimeout time.Duration
	now            func() time.Time
	// upstream, when set, is a real server to use instead of the fake;
	// it returns the server's address and its certificate.
	upstream func(idp *testkit.IdP) (addr string, caPEM []byte)
	// security overrides the upstream security ("starttls").
	security config.Security
	// password makes the account provider "password" with this upstream
	// password.
	password string
	// limits, imapConnections and writeTimeout set the limits.
	limits          Limits
	imapConnections int
	writeTimeout    time.Duration
	// upstreamTimeout: as IMAPOptions.UpstreamTimeout.
	upstreamTimeout time.Duration
	// listenerTLS is the downstream TLS (IMAPOptions.TLS); with it an
	// implicit-TLS listener is served too, at testRelay.tlsAddr. listen
	// is the plain listener's address (default 127.0.0.1:0).
	listenerTLS func() *tls.Config
	listen      string
	// warm, when set, keeps that many warm upstream connections.
	warm int
	// panics is how many panics the test has sessions recover.
	panics int64
}

type testRelay struct {
	t    *testing.T
	idp  *testkit.IdP
	up   *testkit.IMAPUpstream
	srv  *IMAPServer
	addr string
	// tlsAddr is the implicit-TLS listener's, with relayOpts.listenerTLS.
	tlsAddr string
	acct    *registry.Account
	logs    *testkit.SyncBuffer
	// ended receives the account ("" before login) of each session that
	// ended.
	ended chan string
}

var testHash = func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
}()

// newTestRelay starts a fake IdP, an XOAUTH2-only upstream holding three
// messages for testMailbox, and relayd's IMAP server in front of it, with a
// stored grant.
func newTestRelay(t *testing.T, o relayOpts) *testRelay {
	t.Helper()
	b := relaytest.New(t)
	idp := b.IdP
	var up *testkit.IMAPUpstream
	var upAddr string
	var caPEM []byte
	if o.upstream != nil {
		upAddr, caPEM = o.upstream(idp)
	} else {
		up = b.IMAPUpstream(testkit.IMAPOptions{Style: o.style, NoSASLIR: o.noSASLIR, TLS: o.tls})
		up.AddUser(testMailbox)
		for i := 1; i <= 3; i++ {
			up.Deliver(testMailbox, []byte(fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n", i, i)))
		}
		upAddr, caPEM = up.Addr, up.CertPEM
	}
	a := testkit.Account{Direction: "incoming", LocalUser: testUser, LocalPasswordHash: testHash, IMAPServer: upAddr, Security: "none"}
	if o.password != "" {
		a.Provider = "password"
	}
	acct := b.Account(a, relaytest.AccountOptions{Password: o.password, Now: o.now, Edit: func(cfg *config.Account) {
		cfg.Direction = config.DirBoth // the IMAP tests also check SMTP is refused nowhere
		cfg.IMAPConnections = o.imapConnections
		cfg.WarmConnections = o.warm
		if o.tls {
			cfg.IMAPSecurity = config.SecurityTLS
			b.TrustCA(cfg, caPEM)
		}
		if o.security != "" {
			cfg.IMAPSecurity = o.security
		}
	}})
	cfg := acct.Config
	logs, log := b.Logs, b.Log
	ended := make(chan string, 1000)
	srv := NewIMAPServer(IMAPOptions{
		Users:            localauth.NewUsers([]*config.Account{cfg}),
		Accounts:         relaytest.Registry(acct),
		Logger:           log,
		AuthFailureDelay: -1,
		IdleTimeout:      o.idleTimeout,
		PreauthTimeout:   o.preauthTimeout,
		WriteTimeout:     o.writeTimeout,
		UpstreamTimeout:  o.upstreamTimeout,
		Limits:           o.limits,
		Recorder:         endRecorder(ended),
		TLS:              o.listenerTLS,
	})
	panics := health.Panics()
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 2)
	go func() { done <- srv.Serve(ln) }()
	var tlsAddr string
	if o.listenerTLS != nil {
		tln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		tlsAddr = tln.Addr().String()
		go func() { done <- srv.ServeTLS(tln) }()
	} else {
		done <- ErrServerClosed
	}
	srv.SyncWarm()
	t.Cleanup(func() {
		srv.Close()
		for range 2 {
			if err := <-done; err != ErrServerClosed {
				t.Errorf("Serve() = %v, want ErrServerClosed", err)
			}
		}
		if n := health.Panics() - panics; n != o.panics {
			t.Errorf("%d panics in sessions, want %d", n, o.panics)
		}
	})
	return &testRelay{t: t, idp: idp, up: up, srv: srv, addr: ln.Addr().String(), tlsAddr: tlsAddr, acct: acct, logs: logs, ended: ended}
}

// refusing is a relayOpts.upstream where every connection is refused.
func refusing(t *testing.T) func(*testkit.IdP) (string, []byte) {
	return func(*testkit.IdP) (string, []byte) { return testkit.RefusingAddr(t), nil }
}

// dial returns an imapclient connected to relayd.
func (r *testRelay) dial(opts *imapclient.Options) *imapclient.Client {
	r.t.Helper()
	c, err := imapclient.DialInsecure(r.addr, opts)
	if err != nil {
		r.t.Fatalf("DialInsecure() = %v", err)
	}
	r.t.Cleanup(func() { c.Close() })
	return c
}

// login returns a client logged in through relayd with LOGIN.
func (r *testRelay) login() *imapclient.Client {
	r.t.Helper()
	c := r.dial(nil)
	if err := c.Login(testUser, testPassword).Wait(); err != nil {
		r.t.Fatalf("Login() = %v, want nil", err)
	}
	return c
}

// raw is a line-oriented downstream connection for byte-level tests.
type raw struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func (r *testRelay) raw() *raw {
	r.t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: r.t, c: c, br: bufio.NewReader(c)}
	if g := rw.line(); !strings.HasPrefix(g, "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL- ID AUTH=PLAIN AUTH=LOGIN]") {
		r.t.Fatalf("greeting = %q", g)
	}
	return rw
}

func (rw *raw) send(s string) {
	rw.t.Helper()
	if _, err := rw.c.Write([]byte(s)); err != nil {
		rw.t.Fatal(err)
	}
}

func (rw *raw) line() string {
	rw.t.Helper()
	l, err := rw.br.ReadString('\n')
	if err != nil {
		rw.t.Fatalf("reading from relayd: %v (got %q)", err, l)
	}
	return strings.TrimRight(l, "\r\n")
}

// until reads lines up to and including the first with prefix.
func (rw *raw) until(prefix string) []string {
	rw.t.Helper()
	var lines []string
	for {
		l := rw.line()
		lines = append(lines, l)
		if strings.HasPrefix(l, prefix) {
			return lines
		}
	}
}

func TestLoginSelectFetchIdle(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    relayOpts
		auth func(c *imapclient.Client) error
	}{
		{"LOGIN", relayOpts{}, func(c *imapclient.Client) error { return c.Login(testUser, testPassword).Wait() }},
		{"AUTHENTICATE PLAIN", relayOpts{}, func(c *imapclient.Client) error {
			return c.Authenticate(sasl.NewPlainClient("", testUser, testPassword))
		}},
		{"Exchange style", relayOpts{style: testkit.Exchange}, func(c *imapclient.Client) error {
			return c.Login(testUser, testPassword).Wait()
		}},
		{"TLS upstream", relayOpts{tls: true}, func(c *imapclient.Client) error {
			return c.Login(testUser, testPassword).Wait()
		}},
		{"upstream without SASL-IR", relayOpts{noSASLIR: true}, func(c *imapclient.Client) error {
			return c.Login(testUser, testPassword).Wait()
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRelay(t, tc.o)
			updates := make(chan uint32, 16)
			c := r.dial(&imapclient.Options{UnilateralDataHandler: &imapclient.UnilateralDataHandler{
				Mailbox: func(d *imapclient.UnilateralDataMailbox) {
					if d.NumMessages != nil {
						updates <- *d.NumMessages
					}
				},
			}})
			if err := tc.auth(c); err != nil {
				t.Fatalf("login = %v, want nil", err)
			}
			// The upstream's post-login capabilities reach the client.
			if caps := c.Caps(); !caps.Has(imap.CapIdle) || caps.Has(imap.Cap("AUTH=PLAIN")) {
				t.Errorf("capabilities after login = %v, want the upstream's (IDLE, no AUTH=)", caps)
			}
			sel, err := c.Select("INBOX", nil).Wait()
			if err != nil || sel.NumMessages != 3 {
				t.Fatalf("Select() = %v, %v; want 3 messages", sel, err)
			}
			msgs, err := c.Fetch(imap.SeqSetNum(1, 2, 3), &imap.FetchOptions{
				BodySection: []*imap.FetchItemBodySection{{}},
			}).Collect()
			if err != nil || len(msgs) != 3 {
				t.Fatalf("Fetch() = %d messages, %v", len(msgs), err)
			}
			for i, m := range msgs {
				want := fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n", i+1, i+1)
				if got := string(m.FindBodySection(&imap.FetchItemBodySection{})); got != want {
					t.Errorf("message %d = %q, want %q", i+1, got, want)
				}
			}
			idle, err := c.Idle()
			if err != nil {
				t.Fatalf("Idle() = %v", err)
			}
			r.up.Deliver(testMailbox, []byte("Subject: new\r\n\r\nnew\r\n"))
			select {
			case n := <-updates:
				if n != 4 {
					t.Errorf("IDLE update: %d messages, want 4", n)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("no IDLE update within 10s")
			}
			if err := idle.Close(); err != nil {
				t.Fatal(err)
			}
			if err := idle.Wait(); err != nil {
				t.Fatalf("IDLE = %v", err)
			}
			if err := c.Logout().Wait(); err != nil {
				t.Errorf("Logout() = %v", err)
			}
			if n := r.up.Logins.Load(); n != 1 {
				t.Errorf("upstream logins = %d, want 1", n)
			}
		})
	}
}

// Commands pipelined in the same packet as LOGIN reach the upstream.
func TestPipelinedAfterLogin(t *testing.T) {
	r := newTestRelay(t, relayOpts{})
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\nb NOOP\r\nc SELECT INBOX\r\n")
	lines := rw.until("c ")
	joined := strings.Join(lines, "\n")
	if !strings.Contains(joined, "a OK [CAPABILITY ") || !strings.Contains(joined, "b OK") ||
		!strings.HasPrefix(lines[len(lines)-1], "c OK") || !strings.Contains(joined, "* 3 EXISTS") {
		t.Errorf("replies:\n%s", joined)
	}
	cmds := strings.Join(r.up.Commands(), ",")
	if !strings.Contains(cmds, "NOOP,SELECT") {
		t.Errorf("upstream saw %s, want NOOP then SELECT", cmds)
	}
}

// A login after the access token expired refreshes exactly once; sessions
// already established are not re-authenticated.
func TestExpiredTokenRefreshedOnce(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	r := newTestRelay(t, relayOpts{now: clock})
	first := r.login()
	if n := r.idp.Refreshes(); n != 1 {
		t.Fatalf("refreshes after first login = %d, want 1", n)
	}
	second := r.login()
	if n := r.idp.Refreshes(); n != 1 {
		t.Fatalf("refreshes after second login = %d, want 1 (token cached)", n)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	third := r.login()
	if n := r.idp.Refreshes(); n != 2 {
		t.Errorf("refreshes after expiry = %d, want 2", n)
	}
	for i, c := range []*imapclient.Client{first, second, third} {
		if err := c.Noop().Wait(); err != nil {
			t.Errorf("session %d: NOOP = %v", i+1, err)
		}
	}
	if n := r.up.Logins.Load(); n != 3 {
		t.Errorf("upstream logins = %d, want 3 (no re-authentication of open sessions)", n)
	}
}

// When the upstream rejects a token relayd thought valid, it refreshes once
// and retries once, in both providers' failure styles.
func TestRejectedTokenRefreshedAndRetried(t *testing.T) {
	for _, style := range []testkit.Style{testkit.Google, testkit.Exchange} {
		t.Run(fmt.Sprint(style), func(t *testing.T) {
			r := newTestRelay(t, relayOpts{style: style})
			r.login()
			r.idp.ExpireAccessTokens()
			r.login()
			if n := r.idp.Refreshes(); n != 2 {
				t.Errorf("refreshes = %d, want 2", n)
			}
			if n := r.up.Failures.Load(); n != 1 {
				t.Errorf("upstream rejections = %d, want 1", n)
			}
		})
	}
}

func TestRevokedGrantActionableNO(t *testing.T) {
	r := newTestRelay(t, relayOpts{})
	r.login()
	r.idp.Revoke(testMailbox)
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	want := `a NO [AUTHENTICATIONFAILED] mailbox "support" needs reauthorization: run 'relayd authorize support'`
	if got := rw.line(); got != want {
		t.Errorf("reply = %q, want %q", got, want)
	}
	if st := r.acct.Health.State(); st != health.StateNeedsReauth {
		t.Errorf("account state = %s, want needs_reauth", st)
	}
	// The client may try again on the same connection.
	rw.send("b NOOP\r\n")
	if got := rw.line(); got != "b OK NOOP completed" {
		t.Errorf("after failure: %q", got)
	}
}

func TestUpstreamDown(t *testing.T) {
	r := newTestRelay(t, relayOpts{upstream: refusing(t)})
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	// The client is told to come back; the upstream's address is a
	// configuration detail for the log, not for the client.
	want := "a NO [UNAVAILABLE] the mail server is unreachable; try again later"
	if got := rw.line(); got != want {
		t.Errorf("reply = %q, want %q", got, want)
	}
}

func TestBadLocalPassword(t *testing.T) {
	r := newTestRelay(t, relayOpts{})
	c := r.dial(nil)
	err := c.Login(testUser, "wrong").Wait()
	if err == nil || !strings.Contains(err.Error(), "invalid user name or password") {
		t.Errorf("Login(wrong password) = %v", err)
	}
	if n := r.idp.Refreshes() + int(r.up.Logins.Load()+r.up.Failures.Load()); n != 0 {
		t.Errorf("a failed local login reached the IdP or upstream (%d)", n)
	}
}

func TestPreauthCommands(t *testing.T) {
	r := newTestRelay(t, relayOpts{})
	rw := r.raw()
	for _, tc := range []struct{ send, want string }{
		{"a CAPABILITY\r\n", "* CAPABILITY IMAP4rev1 SASL-IR LITERAL- ID AUTH=PLAIN AUTH=LOGIN"},
		{"", "a OK CAPABILITY completed"},
		{"b NOOP\r\n", "b OK NOOP completed"},
		{`c ID ("name" "helpdesk")` + "\r\n", "c BAD invalid character in atom"},
		{"c ID NIL\r\n", `* ID ("name" "relayd")`},
		{"", "c OK ID completed"},
		{"d STARTTLS\r\n", "d BAD STARTTLS is not available: this listener has no certificate (imap.tls_cert)"},
		{"e SELECT INBOX\r\n", "e BAD SELECT is not allowed before LOGIN"},
		{"f FROB\r\n", "f BAD unknown command"},
		{"g LOGIN onlyuser\r\n", "g BAD LOGIN expects a user name and a password"},
		{"h AUTHENTICATE CRAM-MD5\r\n", "h NO [CANNOT] unsupported mechanism; use PLAIN or LOGIN"},
		{"i AUTHENTICATE PLAIN !!!\r\n", "i BAD invalid base64 in the initial response"},
		{"j LOGIN {99999}\r\n", "j BAD literal of 99999 octets exceeds the limit of 4096"},
		{"\r\n", "* BAD empty command line"},
		{"k LOGOUT\r\n", "* BYE logging out"},
		{"", "k OK LOGOUT completed"},
	} {
		if tc.send != "" {
			rw.send(tc.send)
		}
		if got := rw.line(); got != tc.want {
			t.Errorf("after %q: got %q, want %q", tc.send, got, tc.want)
		}
	}
}

func TestAuthenticateContinuations(t *testing.T) {
	b64 := func(s string) string { return base64Std(s) }
	for _, tc := range []struct {
		name  string
		steps []string // alternately: what to send, what prefix to expect
	}{
		{"PLAIN", []string{"a AUTHENTICATE PLAIN\r\n", "+ ", b64("\x00"+testUser+"\x00"+testPassword) + "\r\n", "a OK [CAPABILITY "}},
		{"PLAIN SASL-IR", []string{"a AUTHENTICATE PLAIN " + b64("\x00"+testUser+"\x00"+testPassword) + "\r\n", "a OK [CAPABILITY "}},
		{"LOGIN", []string{"a AUTHENTICATE LOGIN\r\n", "+ " + b64("Username:"), b64(testUser) + "\r\n", "+ " + b64("Password:"), b64(testPassword) + "\r\n", "a OK [CAPABILITY "}},
		{"LOGIN SASL-IR", []string{"a AUTHENTICATE LOGIN " + b64(testUser) + "\r\n", "+ " + b64("Password:"), b64(testPassword) + "\r\n", "a OK [CAPABILITY "}},
		{"cancel", []string{"a AUTHENTICATE PLAIN\r\n", "+ ", "*\r\n", "a BAD AUTHENTICATE cancelled"}},
		{"authzid", []string{"a AUTHENTICATE PLAIN " + b64("boss\x00"+testUser+"\x00"+testPassword) + "\r\n", "a NO [AUTHORIZATIONFAILED]"}},
		{"literal password", []string{"a LOGIN " + testUser + " {9}\r\n", "+ Ready", testPassword + "\r\n", "a OK [CAPABILITY "}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRelay(t, relayOpts{})
			rw := r.raw()
			for i := 0; i < len(tc.steps); i += 2 {
				rw.send(tc.steps[i])
				if got := rw.line(); !strings.HasPrefix(got, tc.steps[i+1]) {
					t.Fatalf("step %d: got %q, want prefix %q", i/2, got, tc.steps[i+1])
				}
			}
		})
	}
}

func TestPreauthTimeout(t *testing.T) {
	r := newTestRelay(t, relayOpts{preauthTimeout: 100 * time.Millisecond})
	rw := r.raw()
	if got := rw.line(); !strings.HasPrefix(got, "* BYE Autologout") {
		t.Errorf("got %q, want BYE Autologout", got)
	}
}

func TestIdleTimeoutClosesSession(t *testing.T) {
	r := newTestRelay(t, relayOpts{idleTimeout: 200 * time.Millisecond})
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	rw.until("a OK")
	rw.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := rw.br.ReadString('\n'); err == nil {
		t.Fatal("session still open after the idle timeout")
	}
	if !strings.Contains(r.logs.String(), `outcome="idle timeout"`) {
		t.Error("idle close not logged")
	}
}

// Shutdown says BYE to clients that have not logged in and lets logged-in
// sessions finish.
func TestShutdown(t *testing.T) {
	r := newTestRelay(t, relayOpts{})
	pre := r.raw()
	c := r.login()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- r.srv.Shutdown(ctx) }()
	if got := pre.line(); got != "* BYE relayd is shutting down" {
		t.Errorf("pre-auth client got %q", got)
	}
	if err := c.Noop().Wait(); err != nil {
		t.Errorf("NOOP on an established session during shutdown = %v", err)
	}
	c.Logout().Wait()
	if err := <-done; err != nil {
		t.Errorf("Shutdown() = %v, want nil once sessions ended", err)
	}
	cancel()
}

// endRecorder tells ended the account of each IMAP session that ends.
type endRecorder chan<- string

func (endRecorder) Login(string, string, string) {}
func (endRecorder) Refused(string, string)       {}
func (r endRecorder) SessionEnd(_, account string, _, _ uint64) {
	r <- account
}
