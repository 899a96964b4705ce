package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// A console with tls_cert serves HTTPS only, its session cookie is
// __Host- and Secure, and relayd reload presents a renewed certificate to
// the next connections.
func TestWebConsoleTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	first := writePair(t, certFile, keyFile, time.Now().Add(90*24*time.Hour))
	cfgPath := filepath.Join(dir, "relayd.toml")
	var tc *testkit.Config
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Web = []string{`listen = "0.0.0.0:0"`, `tls_cert = "` + certFile + `"`, `tls_key = "` + keyFile + `"`}
		o.ConfigPath = cfgPath
		tc = c
	})
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(td.d.WebAddr())
	addr := net.JoinHostPort("127.0.0.1", port)
	client := func(trusted *x509.Certificate) *http.Client {
		pool := x509.NewCertPool()
		pool.AddCert(trusted)
		jar, _ := cookiejar.New(nil)
		return &http.Client{Jar: jar, Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	}
	link, _ := td.d.Console().IssueLink(true, "test")
	if !strings.HasPrefix(link, "https://") {
		t.Fatalf("the link %q is not https", link)
	}
	hc := client(first)
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Get("https://" + addr + link[strings.Index(link, "/login"):])
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Errorf("the console under TLS answered over %s, want HTTP/2", resp.Proto)
	}
	m := regexp.MustCompile(`name="t" value="([^"]+)"`).FindStringSubmatch(readAll(t, hc, "https://"+addr+link[strings.Index(link, "/login"):]))
	if m == nil {
		t.Fatal("no button on the link's page")
	}
	resp, err = hc.PostForm("https://"+addr+"/login", url.Values{"t": {html.UnescapeString(m[1])}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cookies := resp.Cookies()
	if len(cookies) != 1 || cookies[0].Name != "__Host-relayd_console" || !cookies[0].Secure || !cookies[0].HttpOnly ||
		cookies[0].SameSite != http.SameSiteStrictMode {
		t.Errorf("the session cookie under TLS: %+v", cookies)
	}
	// Plain HTTP gets no page.
	if resp, err := http.Get("http://" + addr + "/"); err == nil && resp.StatusCode == http.StatusOK {
		t.Errorf("plain HTTP to the TLS console answered 200")
	}
	// A renewed certificate, then relayd reload.
	second := writePair(t, certFile, keyFile, time.Now().Add(180*24*time.Hour))
	if err := td.d.Reload(); err != nil {
		t.Fatalf("Reload() = %v", err)
	}
	resp, err = client(second).Get("https://" + addr + "/login")
	if err != nil {
		t.Fatalf("after reload, a client trusting only the new certificate: %v", err)
	}
	resp.Body.Close()
}

func readAll(t *testing.T, hc *http.Client, u string) string {
	t.Helper()
	resp, err := hc.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}
