package daemon

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// writePair writes a self-signed certificate for 127.0.0.1 valid until
// notAfter, and its key, to the files relayd reads, and returns it.
func writePair(t *testing.T, certFile, keyFile string, notAfter time.Time) *x509.Certificate {
	t.Helper()
	cert, certPEM, err := testkit.SelfSignedValid("127.0.0.1", time.Now().Add(-time.Hour), notAfter)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := testkit.PEMKey(cert)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile+".tmp", certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile+".tmp", keyPEM, 0o640); err != nil {
		t.Fatal(err)
	}
	os.Rename(certFile+".tmp", certFile)
	os.Rename(keyFile+".tmp", keyFile)
	leaf, _ := x509.ParseCertificate(cert.Certificate[0])
	return leaf
}

// A certificate replaced on disk and reloaded is presented to the next
// connection while a session opened before goes on with the old one; one
// ending within 14 days shows in status and in the metrics.
func TestListenerCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writePair(t, certFile, keyFile, time.Now().Add(90*24*time.Hour))
	cfgPath := filepath.Join(dir, "relayd.toml")
	var tc *testkit.Config
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.IMAP = []string{`tls_cert = "` + certFile + `"`, `tls_key = "` + keyFile + `"`, `listen_tls = ["127.0.0.1:0"]`}
		c.SMTP = c.IMAP
		o.ConfigPath = cfgPath
		tc = c
	})
	tlsAddr := td.d.IMAPTLSAddrs()[0]
	trust := func(certs ...*x509.Certificate) *tls.Config {
		pool := x509.NewCertPool()
		for _, c := range certs {
			pool.AddCert(c)
		}
		return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	}
	dial := func(cfg *tls.Config) (*tls.Conn, *bufio.Reader) {
		t.Helper()
		c, err := tls.Dial("tcp", tlsAddr, cfg)
		if err != nil {
			t.Fatalf("tls.Dial() = %v", err)
		}
		t.Cleanup(func() { c.Close() })
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		if g, _ := br.ReadString('\n'); !strings.HasPrefix(g, "* OK ") {
			t.Fatalf("greeting = %q", g)
		}
		return c, br
	}
	cmd := func(c *tls.Conn, br *bufio.Reader, tag, line string) string {
		t.Helper()
		c.Write([]byte(tag + " " + line + "\r\n"))
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			if strings.HasPrefix(l, tag+" ") {
				return strings.TrimSpace(l)
			}
		}
	}
	old, oldBR := dial(trust(first))
	if l := cmd(old, oldBR, "a", "LOGIN "+user+" "+password); !strings.HasPrefix(l, "a OK") {
		t.Fatalf("LOGIN = %q", l)
	}
	if st := td.d.Status(); len(st.Certificates) != 2 || st.Certificates[0].ExpiresSoon {
		t.Errorf("status certificates = %+v, want imap and smtp, not expiring", st.Certificates)
	}

	second := writePair(t, certFile, keyFile, time.Now().Add(10*24*time.Hour))
	tc.IMAPListen, tc.SMTPListen = td.d.IMAPAddrs(), td.d.SMTPAddrs()
	tc.IMAP = []string{`tls_cert = "` + certFile + `"`, `tls_key = "` + keyFile + `"`, `listen_tls = ["` + tlsAddr + `"]`}
	tc.SMTP = []string{`tls_cert = "` + certFile + `"`, `tls_key = "` + keyFile + `"`, `listen_tls = ["` + td.d.SMTPTLSAddrs()[0] + `"]`}
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	next, _ := dial(trust(second))
	if got := next.ConnectionState().PeerCertificates[0]; !got.Equal(second) {
		t.Errorf("after the reload a new connection got serial %v, want the new certificate's %v", got.SerialNumber, second.SerialNumber)
	}
	if l := cmd(old, oldBR, "b", "SELECT INBOX"); !strings.HasPrefix(l, "b OK") {
		t.Errorf("the session opened before the reload: SELECT = %q", l)
	}
	if got := old.ConnectionState().PeerCertificates[0]; !got.Equal(first) {
		t.Error("the open session's certificate changed")
	}

	st := td.d.Status()
	if len(st.Certificates) != 2 || !st.Certificates[0].ExpiresSoon || st.Certificates[0].File != certFile {
		t.Errorf("status certificates = %+v, want both expiring soon", st.Certificates)
	}
	m := td.scrape()
	if v := metricValue(m, `relayd_listener_certificate_expiry_timestamp_seconds{protocol="imap"}`); int64(v) != second.NotAfter.Unix() {
		t.Errorf("certificate expiry metric = %v, want %d", v, second.NotAfter.Unix())
	}

	// A key that does not match leaves the reload refused and the
	// certificate in force.
	os.WriteFile(keyFile, []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), 0o640)
	if err := td.d.Reload(); err == nil || !strings.Contains(err.Error(), "imap.tls_cert, imap.tls_key") {
		t.Errorf("Reload() with a broken key = %v, want an error naming the keys", err)
	}
	again, _ := dial(trust(second))
	if got := again.ConnectionState().PeerCertificates[0]; !got.Equal(second) {
		t.Error("a refused reload changed the certificate")
	}
}

// [pop3] tls_cert and listen_tls: a POP3 client logs in over implicit TLS;
// the certificate replaced on disk and reloaded is presented to the next
// POP3 connection while the session opened before goes on; status lists
// the POP3 certificate.
func TestPOP3ListenerCertificateReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writePair(t, certFile, keyFile, time.Now().Add(90*24*time.Hour))
	cfgPath := filepath.Join(dir, "relayd.toml")
	var tc *testkit.Config
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.POP3Listen = []string{"127.0.0.1:0"}
		c.POP3 = []string{`tls_cert = "` + certFile + `"`, `tls_key = "` + keyFile + `"`, `listen_tls = ["127.0.0.1:0"]`}
		o.ConfigPath = cfgPath
		tc = c
	})
	addrs := td.d.POP3TLSAddrs()
	if len(addrs) != 1 {
		t.Fatalf("POP3TLSAddrs() = %v", addrs)
	}
	trust := func(c *x509.Certificate) *tls.Config {
		pool := x509.NewCertPool()
		pool.AddCert(c)
		return &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	}
	dial := func(cfg *tls.Config) *tls.Conn {
		t.Helper()
		c, err := tls.Dial("tcp", addrs[0], cfg)
		if err != nil {
			t.Fatalf("tls.Dial() = %v", err)
		}
		return c
	}
	old := dial(trust(first))
	oldBR := td.pop3LoginOn(old)
	st := td.d.Status()
	if len(st.Certificates) != 1 || st.Certificates[0].Protocol != "pop3" {
		t.Errorf("status certificates = %+v, want pop3's", st.Certificates)
	}

	second := writePair(t, certFile, keyFile, time.Now().Add(90*24*time.Hour))
	tc.IMAPListen, tc.SMTPListen, tc.POP3Listen = td.d.IMAPAddrs(), td.d.SMTPAddrs(), td.d.POP3Addrs()
	tc.POP3 = []string{`tls_cert = "` + certFile + `"`, `tls_key = "` + keyFile + `"`, `listen_tls = ["` + addrs[0] + `"]`}
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	next := dial(trust(second))
	td.pop3LoginOn(next)
	if got := next.ConnectionState().PeerCertificates[0]; !got.Equal(second) {
		t.Errorf("after the reload a new POP3 connection got serial %v, want the new certificate's %v", got.SerialNumber, second.SerialNumber)
	}
	old.Write([]byte("STAT\r\n"))
	if line, err := oldBR.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK ") {
		t.Errorf("the POP3 session opened before the reload: STAT = %q, %v", line, err)
	}
	if got := old.ConnectionState().PeerCertificates[0]; !got.Equal(first) {
		t.Error("the open session's certificate changed")
	}
}
