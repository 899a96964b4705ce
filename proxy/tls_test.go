package proxy

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/internal/tlscert"
)

// testCert is a self-signed certificate for host (an IP) held as relayd's
// listener certificate, with a pool and a PEM file clients trust it by.
type testCert struct {
	holder  *tlscert.Holder
	pair    *tlscert.Pair
	pool    *x509.CertPool
	pemFile string
}

func newTestCert(t *testing.T, host string) *testCert {
	t.Helper()
	p, pemBytes := newTestPair(t, host)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, pemBytes, 0o644); err != nil {
		t.Fatal(err)
	}
	return &testCert{holder: tlscert.NewHolder(p), pair: p, pool: pool, pemFile: f}
}

func newTestPair(t *testing.T, host string) (*tlscert.Pair, []byte) {
	t.Helper()
	cert, pemBytes, err := testkit.SelfSigned(host)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	cert.Leaf = leaf
	return &tlscert.Pair{Cert: &cert, NotAfter: leaf.NotAfter, Subject: host}, pemBytes
}

func (c *testCert) client(host string) *tls.Config {
	return &tls.Config{RootCAs: c.pool, ServerName: host}
}

// hostAddr is a non-loopback IPv4 address of this host (eth0's), for
// listeners beyond loopback; the test skips when there is none. Nothing
// leaves the host: relayd and the client both run here.
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Skipf("listing this host's addresses: %v", err)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap().Is4() && !ip.IsLoopback() && !ip.IsLinkLocalUnicast() {
				return ip.Unmap().String()
			}
		}
	}
	t.Skip("this host has no non-loopback IPv4 address to listen on")
	return ""
}

// tlsRaw is a raw line connection over TLS.
func tlsRaw(t *testing.T, addr string, cfg *tls.Config) (*raw, *tls.Conn) {
	t.Helper()
	tc, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatalf("tls.Dial(%s) = %v", addr, err)
	}
	t.Cleanup(func() { tc.Close() })
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	return &raw{t: t, c: tc, br: bufio.NewReader(tc)}, tc
}

func TestPlaintextAuthAllowed(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:143": true, "127.0.0.2:143": true, "[::1]:143": true, "[::ffff:127.0.0.1]:143": true,
		"0.0.0.0:143": false, "[::]:143": false, "192.0.2.2:143": false, "[2001:db8::1]:143": false,
	} {
		ap := netip.MustParseAddrPort(addr)
		if got := plaintextAuthAllowed(net.TCPAddrFromAddrPort(ap)); got != want {
			t.Errorf("plaintextAuthAllowed(%s) = %v, want %v", addr, got, want)
		}
	}
}

// Implicit TLS: TLS 1.2 at least, the greeting offers AUTH and no
// STARTTLS, and LOGIN reaches the mailbox.
func TestIMAPImplicitTLS(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newTestRelay(t, relayOpts{listenerTLS: c.holder.Config})
	rw, tc := tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
	if g := rw.line(); g != "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL- ID AUTH=PLAIN AUTH=LOGIN] relayd ready" {
		t.Fatalf("greeting over TLS = %q", g)
	}
	if v := tc.ConnectionState().Version; v < tls.VersionTLS12 {
		t.Errorf("TLS version %s", tls.VersionName(v))
	}
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	if l := last(rw.until("a ")); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("LOGIN over TLS = %q", l)
	}
	rw.send("b SELECT INBOX\r\n")
	if l := last(rw.until("b ")); !strings.HasPrefix(l, "b OK") {
		t.Fatalf("SELECT = %q", l)
	}

	old := c.client("127.0.0.1")
	old.MaxVersion = tls.VersionTLS11
	if conn, err := tls.Dial("tcp", r.tlsAddr, old); err == nil {
		conn.Close()
		t.Error("a TLS 1.1 client got in, want TLS 1.2 at least")
	}
}

// STARTTLS on a loopback listener: offered, then TLS, then the
// capabilities without STARTTLS, and LOGIN.
func TestIMAPStartTLS(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newTestRelay(t, relayOpts{listenerTLS: c.holder.Config})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: t, c: conn, br: bufio.NewReader(conn)}
	if g := rw.line(); !strings.Contains(g, "[CAPABILITY IMAP4rev1 SASL-IR LITERAL- ID STARTTLS AUTH=PLAIN AUTH=LOGIN]") {
		t.Fatalf("greeting = %q, want STARTTLS and AUTH= (loopback)", g)
	}
	rw.send("a STARTTLS\r\n")
	if l := rw.line(); l != "a OK Begin TLS negotiation now" {
		t.Fatalf("STARTTLS = %q", l)
	}
	tc := tls.Client(conn, c.client("127.0.0.1"))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("Handshake() = %v", err)
	}
	rw = &raw{t: t, c: tc, br: bufio.NewReader(tc)}
	rw.send("b CAPABILITY\r\n")
	if l := rw.line(); l != "* CAPABILITY "+preauthCaps {
		t.Errorf("CAPABILITY after STARTTLS = %q", l)
	}
	rw.until("b OK")
	rw.send("c STARTTLS\r\n")
	if l := rw.line(); l != "c BAD TLS is already on" {
		t.Errorf("second STARTTLS = %q", l)
	}
	rw.send("d LOGIN " + testUser + " " + testPassword + "\r\n")
	if l := last(rw.until("d ")); !strings.HasPrefix(l, "d OK") {
		t.Fatalf("LOGIN after STARTTLS = %q", l)
	}
}

// Commands pipelined behind STARTTLS are refused, not run as if they had
// come over TLS (CVE-2011-0411).
func TestIMAPStartTLSInjection(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newTestRelay(t, relayOpts{listenerTLS: c.holder.Config})
	rw := r.rawTLSAware()
	rw.send("a STARTTLS\r\nb LOGIN " + testUser + " " + testPassword + "\r\n")
	if l := rw.line(); l != "a BAD nothing may follow STARTTLS before the TLS handshake" {
		t.Fatalf("pipelined STARTTLS = %q", l)
	}
	rw.until("* BYE")
}

// rawTLSAware is raw for a relay whose greeting offers STARTTLS.
func (r *testRelay) rawTLSAware() *raw {
	r.t.Helper()
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { conn.Close() })
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: r.t, c: conn, br: bufio.NewReader(conn)}
	if g := rw.line(); !strings.HasPrefix(g, "* OK [CAPABILITY ") {
		r.t.Fatalf("greeting = %q", g)
	}
	return rw
}

// On a listener beyond loopback LOGIN and AUTHENTICATE wait for STARTTLS:
// LOGINDISABLED, no AUTH=, NO [PRIVACYREQUIRED]; after STARTTLS they work.
func TestIMAPLoginDisabledBeyondLoopback(t *testing.T) {
	host := hostAddr(t)
	c := newTestCert(t, host)
	r := newTestRelay(t, relayOpts{listenerTLS: c.holder.Config, listen: host + ":0"})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: t, c: conn, br: bufio.NewReader(conn)}
	if g := rw.line(); !strings.HasPrefix(g, "* OK [CAPABILITY IMAP4rev1 SASL-IR LITERAL- ID STARTTLS LOGINDISABLED] ") {
		t.Fatalf("greeting beyond loopback = %q", g)
	}
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	if l := rw.line(); !strings.HasPrefix(l, "a NO [PRIVACYREQUIRED] LOGIN is disabled until STARTTLS") {
		t.Errorf("LOGIN before STARTTLS = %q", l)
	}
	rw.send("b AUTHENTICATE PLAIN AGhlbHBkZXNrAGxlZ2FjeS1wdw==\r\n")
	if l := rw.line(); !strings.HasPrefix(l, "b NO [PRIVACYREQUIRED] AUTHENTICATE is disabled until STARTTLS") {
		t.Errorf("AUTHENTICATE before STARTTLS = %q", l)
	}
	rw.send("c STARTTLS\r\n")
	rw.until("c OK")
	tc := tls.Client(conn, c.client(host))
	if err := tc.Handshake(); err != nil {
		t.Fatalf("Handshake() = %v", err)
	}
	rw = &raw{t: t, c: tc, br: bufio.NewReader(tc)}
	rw.send("d LOGIN " + testUser + " " + testPassword + "\r\n")
	if l := last(rw.until("d ")); !strings.HasPrefix(l, "d OK") {
		t.Fatalf("LOGIN after STARTTLS = %q", l)
	}
}

// Plaintext on the implicit-TLS port is told so, in plaintext, and the
// connection closes; a TLS handshake on the plaintext port gets a BYE
// instead of a wait. Neither hangs.
func TestIMAPWrongProtocolOnPort(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newTestRelay(t, relayOpts{listenerTLS: c.holder.Config})

	conn, err := net.Dial("tcp", r.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "a LOGIN "+testUser+" "+testPassword+"\r\n")
	b, err := io.ReadAll(conn)
	if err != nil || string(b) != plaintextOnTLSPort {
		t.Errorf("plaintext on the TLS port: read %q, %v; want %q and EOF", b, err, plaintextOnTLSPort)
	}

	// A TLS client that sends its ClientHello before reading (as most
	// do) on the plaintext port.
	conn2, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.SetDeadline(time.Now().Add(10 * time.Second))
	hello := tls.Client(&writeOnly{conn2}, c.client("127.0.0.1"))
	go hello.Handshake()       // writes the ClientHello; its read fails at once
	b, err = io.ReadAll(conn2) // a reset may end it: relayd leaves the ClientHello unread
	if !strings.Contains(string(b), "* BYE this port speaks plaintext IMAP (STARTTLS), not TLS") {
		t.Errorf("ClientHello on the plaintext port: read %q, %v", b, err)
	}

	// crypto/tls's own client on the plaintext port fails at once.
	_, err = tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", r.addr, c.client("127.0.0.1"))
	if err == nil {
		t.Error("a TLS handshake on the plaintext port succeeded")
	}
	var rhe tls.RecordHeaderError
	if !errors.As(err, &rhe) && !strings.Contains(err.Error(), "first record does not look like a TLS handshake") {
		t.Logf("TLS client on the plaintext port: %v", err)
	}
}

// writeOnly passes writes on and fails reads, so that a TLS client sends
// its ClientHello and stops.
type writeOnly struct{ net.Conn }

func (writeOnly) Read([]byte) (int, error) { return 0, io.EOF }

// A certificate replaced (what a reload does) is presented to the next
// connection, while a session opened before keeps working over the old
// one.
func TestIMAPCertificateReplaced(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newTestRelay(t, relayOpts{listenerTLS: c.holder.Config})
	rw, tc := tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
	rw.line()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	rw.until("a OK")
	first := tc.ConnectionState().PeerCertificates[0]

	next, nextPEM := newTestPair(t, "127.0.0.1")
	c.holder.Set(next)
	c.pool.AppendCertsFromPEM(nextPEM)

	rw2, tc2 := tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
	rw2.line()
	if got := tc2.ConnectionState().PeerCertificates[0]; !got.Equal(next.Cert.Leaf) {
		t.Errorf("new connection got certificate serial %v, want the replacement's %v", got.SerialNumber, next.Cert.Leaf.SerialNumber)
	}
	rw.send("b NOOP\r\n")
	if l := last(rw.until("b ")); !strings.HasPrefix(l, "b OK") {
		t.Errorf("NOOP in the session opened before = %q", l)
	}
	if got := tc.ConnectionState().PeerCertificates[0]; !got.Equal(first) || first.Equal(next.Cert.Leaf) {
		t.Error("the open session's certificate changed")
	}
}

// allow_from refuses a client outside its networks before the greeting:
// not a byte, and one log line.
func TestAllowFromBeforeGreeting(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{AllowFrom: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}}})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	if b, err := io.ReadAll(conn); len(b) != 0 || err != nil {
		t.Errorf("client outside allow_from read %q, %v; want nothing and EOF", b, err)
	}
	if !strings.Contains(r.logs.String(), "IMAP connection refused: the client is outside [imap] allow_from") {
		t.Errorf("no log line for the refusal:\n%s", r.logs.String())
	}
	r.srv.SetLimits(Limits{AllowFrom: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	r.rawTLSAware()
}

// SMTP with implicit TLS and with STARTTLS on loopback.
func TestSMTPTLS(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	r := newSMTPRelay(t, smtpRelayOpts{listenerTLS: c.holder.Config})
	msg := []byte("Subject: over TLS\r\nMessage-ID: <tls@example.com>\r\n\r\nhello\r\n")

	implicit, err := smtp.DialTLS(r.tlsAddr, c.client("127.0.0.1"))
	if err != nil {
		t.Fatalf("DialTLS() = %v", err)
	}
	defer implicit.Close()
	if ok, _ := implicit.Extension("STARTTLS"); ok {
		t.Error("implicit TLS offers STARTTLS")
	}
	if err := implicit.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatalf("Auth() over implicit TLS = %v", err)
	}
	if err := r.send(implicit, smtpSender, []string{"a@example.net"}, msg); err != nil {
		t.Fatalf("sending over implicit TLS = %v", err)
	}

	st, err := smtp.DialStartTLS(r.addr, c.client("127.0.0.1"))
	if err != nil {
		t.Fatalf("DialStartTLS() = %v", err)
	}
	defer st.Close()
	if err := st.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatalf("Auth() after STARTTLS = %v", err)
	}
	if err := r.send(st, smtpSender, []string{"a@example.net"}, msg); err != nil {
		t.Fatalf("sending after STARTTLS = %v", err)
	}
	r.waitMessages(2)

	// Plaintext on the implicit-TLS port.
	conn, err := net.Dial("tcp", r.tlsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "EHLO client.example\r\n")
	if b, _ := io.ReadAll(conn); !strings.HasPrefix(string(b), "554 5.7.0 This port speaks SMTP over TLS") {
		t.Errorf("plaintext on the SMTP TLS port: %q", b)
	}
	// A TLS handshake on the plaintext port fails at once.
	if _, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", r.addr, c.client("127.0.0.1")); err == nil {
		t.Error("a TLS handshake on the plaintext SMTP port succeeded")
	}
	// A client that sends its ClientHello and waits (set up for port
	// 465): relayd closes the connection at once and says why, rather
	// than waiting for a line end until the timeout.
	conn2, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn2.Close()
	conn2.SetDeadline(time.Now().Add(10 * time.Second))
	hello := tls.Client(&writeOnly{conn2}, c.client("127.0.0.1"))
	go hello.Handshake()
	b, err := io.ReadAll(conn2) // the greeting, then the end
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("a ClientHello on the plaintext SMTP port: the connection stayed open (read %q)", b)
	}
	if !strings.Contains(r.logs.String(), "started a TLS handshake on a plaintext port") {
		t.Errorf("no log line for the ClientHello on the plaintext port:\n%s", r.logs.String())
	}
}

// On an SMTP listener beyond loopback AUTH waits for STARTTLS: no AUTH in
// EHLO, 523 to AUTH, 530 to MAIL; after STARTTLS it works.
func TestSMTPAuthBeforeStartTLSBeyondLoopback(t *testing.T) {
	host := hostAddr(t)
	c := newTestCert(t, host)
	r := newSMTPRelay(t, smtpRelayOpts{listenerTLS: c.holder.Config, listen: host + ":0"})
	conn, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: t, c: conn, br: bufio.NewReader(conn)}
	rw.line()
	rw.send("EHLO client.example\r\n")
	ehlo := rw.until("250 ")
	_ = ehlo
	rw.send("AUTH PLAIN AGhlbHBkZXNrAGxlZ2FjeS1wdw==\r\n")
	if l := rw.line(); !strings.HasPrefix(l, "523 5.7.10") {
		t.Errorf("AUTH before STARTTLS = %q, want 523 5.7.10", l)
	}
	rw.send("MAIL FROM:<" + smtpSender + ">\r\n")
	if l := rw.line(); l != "530 5.7.0 Must issue a STARTTLS command first" {
		t.Errorf("MAIL before STARTTLS = %q", l)
	}

	cl, err := smtp.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if ok, _ := cl.Extension("AUTH"); ok {
		t.Error("EHLO offers AUTH before STARTTLS beyond loopback")
	}
	st, err := smtp.DialStartTLS(r.addr, c.client(host))
	if err != nil {
		t.Fatalf("DialStartTLS() = %v", err)
	}
	defer st.Close()
	if err := st.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatalf("Auth() after STARTTLS = %v", err)
	}
}

// Real clients: curl over imaps:// and IMAP STARTTLS, smtps:// and SMTP
// STARTTLS; swaks -tls and -tlsc. They trust the test CA only.
// (TestPOP3TLSCurl has pop3s:// and POP3 STLS.)
func TestTLSRealClients(t *testing.T) {
	curl := realserver.RequireBinary(t, "curl", "curl")
	swaks := realserver.RequireBinary(t, "swaks", "swaks")
	c := newTestCert(t, "127.0.0.1")
	r := newTestRelay(t, relayOpts{listenerTLS: c.holder.Config})
	for _, u := range []struct {
		url  string
		args []string
	}{{"imaps://" + r.tlsAddr + "/INBOX;UID=1", nil}, {"imap://" + r.addr + "/INBOX;UID=1", []string{"--ssl-reqd"}}} {
		args := append([]string{"-sS", "--max-time", "20", "--cacert", c.pemFile, "--user", testUser + ":" + testPassword}, u.args...)
		out, err := exec.Command(curl, append(args, u.url)...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Subject: message 1") {
			t.Errorf("curl %s: %v\n%s\nrelayd log:\n%s", u.url, err, out, r.logs.String())
		}
	}

	s := newSMTPRelay(t, smtpRelayOpts{listenerTLS: c.holder.Config})
	mail := filepath.Join(t.TempDir(), "mail.eml")
	os.WriteFile(mail, []byte("From: <"+smtpSender+">\r\nTo: <a@example.net>\r\nSubject: curl\r\nMessage-ID: <curl@example.com>\r\n\r\nhello\r\n"), 0o644)
	for _, u := range []struct {
		url  string
		args []string
	}{{"smtps://" + s.tlsAddr, nil}, {"smtp://" + s.addr, []string{"--ssl-reqd"}}} {
		args := append([]string{"-sS", "--max-time", "20", "--cacert", c.pemFile, "--user", testUser + ":" + testPassword,
			"--mail-from", smtpSender, "--mail-rcpt", "a@example.net", "--upload-file", mail}, u.args...)
		if out, err := exec.Command(curl, append(args, u.url)...).CombinedOutput(); err != nil {
			t.Errorf("curl %s: %v\n%s\nrelayd log:\n%s", u.url, err, out, s.logs.String())
		}
	}
	for _, sw := range []struct{ addr, flag string }{{s.addr, "-tls"}, {s.tlsAddr, "-tlsc"}} {
		host, port, _ := net.SplitHostPort(sw.addr)
		out, err := exec.Command(swaks, "--server", host, "--port", port, sw.flag, "--tls-verify", "--tls-ca-path", c.pemFile,
			"--auth", "PLAIN", "--auth-user", testUser, "--auth-password", testPassword,
			"--from", smtpSender, "--to", "a@example.net", "--timeout", "20").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "250 2.0.0 queued as") {
			t.Errorf("swaks %s: %v\n%s", sw.flag, err, out)
		}
	}
	s.waitMessages(4)
}

// last is the last line until read.
func last(lines []string) string { return lines[len(lines)-1] }
