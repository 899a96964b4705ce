package proxy

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

type pop3Opts struct {
	style testkit.Style
	tls   bool
	// dead: the upstream cannot be reached.
	dead bool
	// upstream, when set, is a real server: its address and certificate.
	upstream func(idp *testkit.IdP) (addr string, caPEM []byte)
	security config.Security
	password string
	// downTLS gives the listener a certificate (STLS).
	downTLS *tls.Config
	// listenerTLS is the downstream TLS (POP3Options.TLS); with it an
	// implicit-TLS listener is served too, at pop3Relay.tlsAddr. listen
	// is the plain listener's address (default 127.0.0.1:0).
	listenerTLS func() *tls.Config
	listen      string
	// upstreamTimeout: as POP3Options.UpstreamTimeout.
	upstreamTimeout time.Duration
}

type pop3Relay struct {
	t    *testing.T
	idp  *testkit.IdP
	up   *testkit.POP3Upstream
	srv  *POP3Server
	addr string
	// tlsAddr is the implicit-TLS listener's, with pop3Opts.listenerTLS.
	tlsAddr string
	acct    *registry.Account
	logs    *testkit.SyncBuffer
	// ended receives the account ("" before login) of each session that
	// ended.
	ended chan string
}

// newPOP3Relay starts a fake IdP, an XOAUTH2-only POP3 upstream holding
// three messages for testMailbox (or a real server), and relayd's POP3
// server in front of it, with a stored grant.
func newPOP3Relay(t *testing.T, o pop3Opts) *pop3Relay {
	t.Helper()
	b := relaytest.New(t)
	var up *testkit.POP3Upstream
	var upAddr string
	var caPEM []byte
	switch {
	case o.upstream != nil:
		upAddr, caPEM = o.upstream(b.IdP)
	case o.dead:
		upAddr = b.DeadAddr()
	default:
		up = b.POP3Upstream(testkit.POP3Options{Style: o.style, TLS: o.tls})
		up.AddUser(testMailbox)
		for i := 1; i <= 3; i++ {
			up.Deliver(testMailbox, []byte(fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n.dot line\r\n", i, i)))
		}
		upAddr, caPEM = up.Addr, up.CertPEM
	}
	a := testkit.Account{Direction: "incoming", LocalUser: testUser, LocalPasswordHash: testHash,
		IMAPServer: upAddr, POP3Server: upAddr, Security: "none"}
	if o.password != "" {
		a.Provider = "password"
	}
	acct := b.Account(a, relaytest.AccountOptions{Password: o.password, Edit: func(cfg *config.Account) {
		if o.tls {
			cfg.POP3Security = config.SecurityTLS
			b.TrustCA(cfg, caPEM)
		}
		if o.security != "" {
			cfg.POP3Security = o.security
		}
	}})
	ended := make(chan string, 1000)
	opts := POP3Options{
		Users:            localauth.NewUsers([]*config.Account{acct.Config}),
		Accounts:         relaytest.Registry(acct),
		Logger:           b.Log,
		AuthFailureDelay: -1,
		UpstreamTimeout:  o.upstreamTimeout,
		Recorder:         endRecorder(ended),
	}
	if o.downTLS != nil {
		opts.TLS = func() *tls.Config { return o.downTLS }
	}
	if o.listenerTLS != nil {
		opts.TLS = o.listenerTLS
	}
	srv := NewPOP3Server(opts)
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
	t.Cleanup(func() {
		srv.Close()
		for range 2 {
			if err := <-done; err != ErrServerClosed {
				t.Errorf("Serve() = %v, want ErrServerClosed", err)
			}
		}
		if n := health.Panics() - panics; n != 0 {
			t.Errorf("%d panics in sessions", n)
		}
	})
	return &pop3Relay{t: t, idp: b.IdP, up: up, srv: srv, addr: ln.Addr().String(), tlsAddr: tlsAddr, acct: acct, logs: b.Logs, ended: ended}
}

// raw connects and reads the greeting.
func (r *pop3Relay) raw() *raw {
	r.t.Helper()
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	rw := &raw{t: r.t, c: c, br: bufio.NewReader(c)}
	if g := rw.line(); !strings.HasPrefix(g, "+OK") {
		r.t.Fatalf("greeting = %q", g)
	}
	return rw
}

// multi reads a multi-line response's lines up to ".".
func (rw *raw) multi() []string {
	rw.t.Helper()
	var l []string
	for {
		s := rw.line()
		if s == "." {
			return l
		}
		l = append(l, s)
	}
}

// A client logs in with USER and PASS and pipelines its transaction in
// the same write as PASS: relayd passes on what follows PASS once the
// upstream's +OK is the client's, and the upstream answers it all.
func TestPOP3EndToEndPipelined(t *testing.T) {
	for _, style := range []testkit.Style{testkit.Exchange, testkit.Google} {
		t.Run(fmt.Sprint(style), func(t *testing.T) {
			r := newPOP3Relay(t, pop3Opts{style: style, tls: true})
			rw := r.raw()
			rw.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\nSTAT\r\nRETR 2\r\nDELE 1\r\nQUIT\r\n")
			if got := rw.line(); got != "+OK send PASS" {
				t.Fatalf("USER reply = %q", got)
			}
			if got := rw.line(); got != "+OK User successfully authenticated." {
				t.Fatalf("PASS reply = %q, want the upstream's +OK\nlog:\n%s", got, r.logs.String())
			}
			if got := rw.line(); !strings.HasPrefix(got, "+OK 3 ") {
				t.Errorf("STAT = %q", got)
			}
			if got := rw.line(); !strings.HasPrefix(got, "+OK") {
				t.Errorf("RETR = %q", got)
			}
			if got, want := strings.Join(rw.multi(), "\n"), "Subject: message 2\n\nbody 2\n..dot line"; got != want {
				t.Errorf("RETR 2 = %q, want %q (dot-stuffed as sent)", got, want)
			}
			rw.line() // DELE
			rw.line() // QUIT
			if _, err := rw.br.ReadByte(); err != io.EOF {
				t.Errorf("after QUIT read = %v, want EOF", err)
			}
			if n := r.up.Messages(testMailbox); n != 2 {
				t.Errorf("upstream has %d messages after DELE and QUIT, want 2", n)
			}
			if got := <-r.ended; got != "support" {
				t.Errorf("session ended for %q", got)
			}
			if n := r.acct.POP3Sessions(); n != 0 {
				t.Errorf("POP3Sessions() = %d after the session ended", n)
			}
		})
	}
}

// AUTH PLAIN with and without an initial response, and AUTH LOGIN, log
// in; CAPA lists SASL PLAIN LOGIN and, without a certificate, no STLS.
func TestPOP3Auth(t *testing.T) {
	r := newPOP3Relay(t, pop3Opts{})
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPassword))
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	for _, tc := range []struct {
		name  string
		lines []string // sent one at a time, each but the last answered by "+ "
	}{
		{"plain-ir", []string{"AUTH PLAIN " + plain}},
		{"plain", []string{"AUTH PLAIN", plain}},
		{"login", []string{"AUTH LOGIN", b64(testUser), b64(testPassword)}},
		{"login-ir", []string{"AUTH LOGIN " + b64(testUser), b64(testPassword)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rw := r.raw()
			rw.send("CAPA\r\n")
			caps := rw.multi()
			if got := strings.Join(caps, ","); !strings.Contains(got, "SASL PLAIN LOGIN") || strings.Contains(got, "STLS") {
				t.Errorf("CAPA = %q", got)
			}
			for i, l := range tc.lines {
				rw.send(l + "\r\n")
				if i < len(tc.lines)-1 {
					if got := rw.line(); !strings.HasPrefix(got, "+ ") {
						t.Fatalf("after %q: %q, want a challenge", l, got)
					}
				}
			}
			if got := rw.line(); got != "+OK User successfully authenticated." {
				t.Fatalf("AUTH = %q\nlog:\n%s", got, r.logs.String())
			}
			rw.send("LIST\r\n")
			if got := rw.line(); !strings.HasPrefix(got, "+OK") || len(rw.multi()) != 3 {
				t.Errorf("LIST = %q", got)
			}
		})
	}
	rw := r.raw()
	rw.send("AUTH\r\n")
	if got := rw.line(); got != "+OK" || strings.Join(rw.multi(), " ") != "PLAIN LOGIN" {
		t.Errorf("AUTH without a mechanism = %q", got)
	}
	rw.send("AUTH PLAIN\r\n")
	rw.line()
	rw.send("*\r\n")
	if got := rw.line(); got != "-ERR AUTH cancelled" {
		t.Errorf("cancelled AUTH = %q", got)
	}
	rw.send("USER " + testUser + "\r\nPASS wrong\r\n")
	rw.line()
	if got := rw.line(); got != "-ERR [AUTH] invalid user name or password" {
		t.Errorf("wrong password = %q", got)
	}
}

// A revoked grant: the upstream refuses the token, relayd refreshes once,
// the IdP refuses the grant, and the client hears what to do with
// RFC 3206's [AUTH]; an unreachable upstream is [SYS/TEMP] and the
// account's POP3 condition is an outage, which holds no mail.
func TestPOP3Failures(t *testing.T) {
	for _, style := range []testkit.Style{testkit.Exchange, testkit.Google} {
		r := newPOP3Relay(t, pop3Opts{style: style})
		r.idp.Revoke(testMailbox)
		rw := r.raw()
		rw.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\n")
		rw.line()
		want := `-ERR [AUTH] mailbox "support" needs reauthorization: run 'relayd authorize support'`
		if got := rw.line(); got != want {
			t.Errorf("%v: revoked grant: %q, want %q\nlog:\n%s", style, got, want, r.logs.String())
		}
		if st := r.acct.Health.Snapshot(); st.State != health.StateNeedsReauth {
			t.Errorf("%v: state = %s, want needs_reauth", style, st.State)
		}
	}

	r := newPOP3Relay(t, pop3Opts{dead: true})
	rw := r.raw()
	rw.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)) + "\r\n")
	if got, want := rw.line(), "-ERR [SYS/TEMP] the mail server is unreachable; try again later"; got != want {
		t.Errorf("unreachable: %q, want %q", got, want)
	}
	c := r.acct.Health.Condition(health.SourcePOP3)
	if c == nil || c.Reason != health.ReasonPOP3Unreachable || !c.Outage() {
		t.Errorf("POP3 condition = %v, want pop3_unreachable (an outage)", c)
	}
	if h := r.acct.Health.Holding(); h != nil {
		t.Errorf("a POP3 outage holds outgoing mail: %v", h)
	}
	if strings.Contains(rw.line2(), r.acct.Config.POP3Server) {
		t.Error("the reply names the configured server")
	}
}

// line2 sends NOOP and returns the answer, to show the session goes on.
func (rw *raw) line2() string {
	rw.send("NOOP\r\n")
	return rw.line()
}

// Bad input gets a protocol error and the session goes on, or ends; never
// a crash, a hang or an echo of a password.
func TestPOP3BadInput(t *testing.T) {
	r := newPOP3Relay(t, pop3Opts{})
	rw := r.raw()
	for _, tc := range []struct{ send, want string }{
		{"USER " + strings.Repeat("x", 300) + "\r\n", "-ERR line too long (RFC 2449: 255 octets at most)"},
		{"AUTH PLAIN %%%notbase64\r\n", "-ERR invalid base64 in the initial response"},
		{"AUTH CRAM-MD5\r\n", "-ERR unsupported mechanism; use PLAIN or LOGIN"},
		{"RETR 1\r\n", "-ERR log in first (USER and PASS, or AUTH)"},
		{"PASS " + testPassword + "\r\n", "-ERR give USER first"},
		{"STLS\r\n", "-ERR STLS is not available: this listener has no certificate"},
		{"\x01\x02garbage\r\n", "-ERR control characters in the command line"},
		{"HELLO\r\n", "-ERR unknown command"},
	} {
		rw.send(tc.send)
		if got := rw.line(); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.send, got, tc.want)
		}
	}
	rw.send("AUTH PLAIN\r\n")
	rw.line()
	rw.send("!!!\r\n")
	if got := rw.line(); got != "-ERR invalid base64 in the SASL response" {
		t.Errorf("bad base64 answer: %q", got)
	}

	// A TLS client on the plaintext port: its handshake fails, and a
	// client that reads what relayd said sees one -ERR, then the end.
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tls.Client(c, &tls.Config{InsecureSkipVerify: true}).Handshake(); err == nil {
		t.Error("a TLS handshake on the plaintext port succeeded")
	}
	c2, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	c2.SetDeadline(time.Now().Add(10 * time.Second))
	c2.Write([]byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"))
	out, _ := io.ReadAll(c2)
	if !strings.HasSuffix(string(out), "-ERR this port speaks plaintext POP3, not TLS\r\n") {
		t.Errorf("TLS handshake answered %q", out)
	}
	if strings.Contains(r.logs.String(), testPassword) {
		t.Error("the local password is in the log")
	}
}

// With a certificate, CAPA offers STLS; after it the client logs in over
// TLS and CAPA offers it no more.
func TestPOP3STLS(t *testing.T) {
	cert, pemBytes, err := testkit.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	_ = pemBytes
	r := newPOP3Relay(t, pop3Opts{downTLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	rw := r.raw()
	rw.send("CAPA\r\n")
	if caps := strings.Join(rw.multi(), ","); !strings.Contains(caps, "STLS") {
		t.Fatalf("CAPA = %q, want STLS", caps)
	}
	rw.send("STLS\r\n")
	if got := rw.line(); got != "+OK begin TLS negotiation" {
		t.Fatalf("STLS = %q", got)
	}
	tc := tls.Client(rw.c, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tw := &raw{t: t, c: tc, br: bufio.NewReader(tc)}
	tw.send("CAPA\r\n")
	if caps := strings.Join(tw.multi(), ","); strings.Contains(caps, "STLS") {
		t.Errorf("CAPA after STLS = %q", caps)
	}
	tw.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\nSTAT\r\n")
	tw.line()
	if got := tw.line(); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("PASS over TLS = %q", got)
	}
	if got := tw.line(); !strings.HasPrefix(got, "+OK 3 ") {
		t.Errorf("STAT = %q", got)
	}
}

// FuzzPOP3Session feeds arbitrary bytes to a whole pre-auth POP3 session:
// it must answer and end when the client is done, never panic or hang.
// The account's upstream is unreachable, so a good login ends in
// [SYS/TEMP].
func FuzzPOP3Session(f *testing.F) {
	plain := base64.StdEncoding.EncodeToString([]byte("\x00" + testUser + "\x00" + testPassword))
	for _, s := range []string{
		"USER helpdesk\r\nPASS legacy-pw\r\nSTAT\r\n",
		"CAPA\r\nAUTH\r\nQUIT\r\n",
		"AUTH PLAIN " + plain + "\r\nLIST\r\n",
		"AUTH PLAIN\r\n" + plain + "\r\n",
		"AUTH LOGIN\r\naGVscGRlc2s=\r\n*\r\n",
		"AUTH PLAIN =\r\n", "AUTH PLAIN ====\r\n",
		"USER " + strings.Repeat("x", 400) + "\r\nQUIT\r\n",
		strings.Repeat("y", 70000) + "\r\n",
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
		"STLS\r\nAPOP a b\r\n\r\n\n \r\n",
	} {
		f.Add([]byte(s))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	deadAddr := testkit.RefusingAddr(f)
	cfg := testkit.Account{Name: "support", Provider: "password", Email: testMailbox, PasswordFile: "unread",
		LocalUser: testUser, LocalPasswordHash: testHash, Direction: "incoming",
		IMAPServer: deadAddr, POP3Server: deadAddr, Security: "none"}.Parsed(f)
	acct := registry.Wrap(&auth.Account{Config: cfg, Password: "x"})
	srv := NewPOP3Server(POP3Options{
		Users:            localauth.NewUsers([]*config.Account{cfg}),
		Accounts:         registry.New(map[string]*registry.Account{"support": acct}),
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		AuthFailureDelay: -1,
		PreauthTimeout:   5 * time.Second,
	})
	go srv.Serve(ln)
	defer srv.Close()
	before := health.Panics()
	f.Fuzz(func(t *testing.T, in []byte) {
		out := fuzzSession(t, ln.Addr().String(), in)
		if n := health.Panics() - before; n != 0 {
			t.Fatalf("%d panics", n)
		}
		if strings.Contains(string(out), testPassword) || strings.Contains(string(out), "\x00") {
			t.Fatalf("the session echoed a secret: %q", out)
		}
	})
}
