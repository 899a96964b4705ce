package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/realserver"
)

// pop3Login sends USER and PASS and then STAT, and checks that the
// mailbox's three messages answer.
func pop3Login(t *testing.T, rw *raw) {
	t.Helper()
	rw.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\nSTAT\r\n")
	if got := rw.line(); got != "+OK send PASS" {
		t.Fatalf("USER = %q", got)
	}
	if got := rw.line(); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("PASS = %q", got)
	}
	if got := rw.line(); !strings.HasPrefix(got, "+OK 3 ") {
		t.Fatalf("STAT = %q", got)
	}
}

// Implicit TLS (pop3s): TLS 1.2 at least, CAPA offers USER and SASL and
// no STLS, and USER/PASS reaches the mailbox; plaintext on that port is
// told so in plaintext.
func TestPOP3ImplicitTLS(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newPOP3Relay(t, pop3Opts{listenerTLS: c.holder.Config})
	rw, tc := tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
	if g := rw.line(); g != "+OK relayd POP3 ready" {
		t.Fatalf("greeting over TLS = %q", g)
	}
	if v := tc.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %s", tls.VersionName(v))
	}
	rw.send("CAPA\r\n")
	caps := strings.Join(rw.multi(), ",")
	if !strings.Contains(caps, ",USER,SASL PLAIN LOGIN,") || strings.Contains(caps, "STLS") {
		t.Errorf("CAPA over implicit TLS = %q, want USER and SASL, no STLS", caps)
	}
	rw.send("STLS\r\n")
	if got := rw.line(); got != "-ERR TLS is already on" {
		t.Errorf("STLS over TLS = %q", got)
	}
	pop3Login(t, rw)

	old := c.client("127.0.0.1")
	old.MaxVersion = tls.VersionTLS11
	if conn, err := tls.Dial("tcp", r.tlsAddr, old); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 client got in, want TLS 1.2 at least")
	}

	conn, err := net.Dial("tcp", r.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	conn.Write([]byte("CAPA\r\n"))
	if out, _ := io.ReadAll(conn); !strings.HasPrefix(string(out), "-ERR this port speaks POP3 over TLS (pop3s)") {
		t.Errorf("plaintext on the pop3s port answered %q", out)
	}
}

// On a listener beyond loopback CAPA offers no USER and no SASL before
// STLS, and USER, PASS and AUTH are refused (RFC 2595 §4); after STLS
// they work.
func TestPOP3LoginDisabledBeyondLoopback(t *testing.T) {
	host := hostAddr(t)
	c := newTestCert(t, host)
	r := newPOP3Relay(t, pop3Opts{listenerTLS: c.holder.Config, listen: host + ":0"})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: t, c: conn, br: bufio.NewReader(conn)}
	if g := rw.line(); g != "+OK relayd POP3 ready" {
		t.Fatalf("greeting = %q", g)
	}
	rw.send("CAPA\r\n")
	caps := rw.multi()
	for _, c := range caps {
		if c == "USER" || strings.HasPrefix(c, "SASL") {
			t.Errorf("CAPA before STLS beyond loopback offers %q: %q", c, caps)
		}
	}
	if !strings.Contains(strings.Join(caps, ","), ",STLS,") {
		t.Errorf("CAPA = %q, want STLS", caps)
	}
	for _, cmd := range []string{"USER " + testUser, "PASS " + testPassword, "AUTH PLAIN AGhlbHBkZXNrAGxlZ2FjeS1wdw==", "AUTH"} {
		rw.send(cmd + "\r\n")
		name, _, _ := strings.Cut(cmd, " ")
		if got := rw.line(); !strings.HasPrefix(got, "-ERR [AUTH] "+name+" is disabled until STLS on this listener") {
			t.Errorf("%s before STLS = %q", name, got)
		}
	}
	rw.send("STLS\r\n")
	if got := rw.line(); got != "+OK begin TLS negotiation" {
		t.Fatalf("STLS = %q", got)
	}
	tc := tls.Client(conn, c.client(host))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("Handshake() = %v", err)
	}
	rw = &raw{t: t, c: tc, br: bufio.NewReader(tc)}
	rw.send("CAPA\r\n")
	if caps := strings.Join(rw.multi(), ","); !strings.Contains(caps, ",USER,SASL PLAIN LOGIN,") || strings.Contains(caps, "STLS") {
		t.Errorf("CAPA after STLS = %q, want USER and SASL, no STLS", caps)
	}
	pop3Login(t, rw)
	if strings.Contains(r.logs.String(), testPassword) {
		t.Error("the local password is in the log")
	}
}

// A certificate replaced (what a reload does) is presented to the next
// POP3 connection, while a session opened before keeps working over the
// old one.
func TestPOP3CertificateReplaced(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newPOP3Relay(t, pop3Opts{listenerTLS: c.holder.Config})
	rw, tc := tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
	rw.line()
	rw.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\n")
	rw.line()
	if got := rw.line(); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("PASS = %q", got)
	}
	first := tc.ConnectionState().PeerCertificates[0]

	next, nextPEM := newTestPair(t, "127.0.0.1")
	c.holder.Set(next)
	c.pool.AppendCertsFromPEM(nextPEM)

	rw2, tc2 := tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
	rw2.line()
	if got := tc2.ConnectionState().PeerCertificates[0]; !got.Equal(next.Cert.Leaf) {
		t.Errorf("new connection got certificate serial %v, want the replacement's %v", got.SerialNumber, next.Cert.Leaf.SerialNumber)
	}
	// STLS on the plain listener presents the replacement too.
	rw3 := r.raw()
	rw3.send("STLS\r\n")
	rw3.line()
	tc3 := tls.Client(rw3.c, c.client("127.0.0.1"))
	if err := tc3.Handshake(); err != nil {
		t.Fatalf("STLS handshake = %v", err)
	}
	if got := tc3.ConnectionState().PeerCertificates[0]; !got.Equal(next.Cert.Leaf) {
		t.Errorf("STLS got certificate serial %v, want the replacement's", got.SerialNumber)
	}
	tc3.Close()

	rw.send("STAT\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "+OK 3 ") {
		t.Errorf("STAT in the session opened before = %q", got)
	}
	if got := tc.ConnectionState().PeerCertificates[0]; !got.Equal(first) || first.Equal(next.Cert.Leaf) {
		t.Error("the open session's certificate changed")
	}
}

// allow_from closes a POP3 client outside its networks before the
// greeting, as for IMAP (the accept loop is shared).
func TestPOP3AllowFrom(t *testing.T) {
	r := newPOP3Relay(t, pop3Opts{})
	r.srv.SetLimits(Limits{AllowFrom: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(conn); len(b) != 0 || err != nil {
		t.Errorf("client outside allow_from read %q, %v; want nothing and EOF", b, err)
	}
	if !strings.Contains(r.logs.String(), "POP3 connection refused: the client is outside [pop3] allow_from") {
		t.Errorf("no log line for the refusal:\n%s", r.logs.String())
	}
	r.srv.SetLimits(Limits{AllowFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	r.raw()
}

// curl over pop3s:// and over pop3:// with --ssl-reqd (STLS), trusting
// the test CA only.
func TestPOP3TLSCurl(t *testing.T) {
	curl := realserver.RequireBinary(t, "curl", "curl")
	c := newTestCert(t, "127.0.0.1")
	r := newPOP3Relay(t, pop3Opts{listenerTLS: c.holder.Config})
	for _, u := range []struct {
		url  string
		args []string
	}{{"pop3s://" + r.tlsAddr + "/1", nil}, {"pop3://" + r.addr + "/1", []string{"--ssl-reqd"}}} {
		args := append([]string{"-sS", "--max-time", "20", "--cacert", c.pemFile, "--user", testUser + ":" + testPassword}, u.args...)
		out, err := exec.Command(curl, append(args, u.url)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Subject: message 1") {
			t.Errorf("curl %s: %v\n%s\nrelayd log:\n%s", u.url, err, out, r.logs.String())
		}
	}
}
