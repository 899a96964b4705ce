package main

import (
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/realserver"
)

var linkRE = regexp.MustCompile(`http://\S+/login\?t=\S+`)

// open follows a relayd web-login link in a fresh browser-like client and
// returns the main page it leads to.
func openLink(t *testing.T, link string) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	hc := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	// The link's page, then its button.
	resp, err := hc.Get(link)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	m := regexp.MustCompile(`name="t" value="([^"]+)"`).FindStringSubmatch(string(body))
	if resp.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("GET %s: %s\n%s", link, resp.Status, body)
	}
	u, _ := url.Parse(link)
	resp, err = hc.PostForm(u.Scheme+"://"+u.Host+"/login", url.Values{"t": {html.UnescapeString(m[1])}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ = io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Fatalf("GET %s: %s at %s\n%s", link, resp.Status, resp.Request.URL, body)
	}
	return hc, string(body)
}

// relayd web-login prints a one-time link with the caller's role on the
// status socket: an admin's for root, a read-only one for a member of
// group relayd (here nobody, given the socket's group); without [web] it
// says how to turn the console on.
func TestWebLogin(t *testing.T) {
	e := newEnv(t)
	if out, code := e.run("web-login", "-c", e.cfg); code == 0 || !strings.Contains(out, "not running") {
		t.Errorf("web-login without a daemon: exit %d\n%s", code, out)
	}
	d := e.serve()
	if out, code := e.run("web-login", "-c", e.cfg); code == 0 || !strings.Contains(out, "[web] listen") {
		t.Errorf("web-login with the console off: exit %d\n%s", code, out)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		t.Fatal("relayd did not stop on SIGTERM")
	}

	addr, err := realserver.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	e.conf.Web = []string{`listen = "` + addr + `"`}
	e.writeConfig()
	d = e.serve()
	out, code := e.run("web-login", "-c", e.cfg)
	link := linkRE.FindString(out)
	if code != 0 || link == "" || !strings.Contains(out, "starts an admin session") || !strings.Contains(out, "ssh -L") {
		t.Fatalf("web-login as root: exit %d\n%s", code, out)
	}
	if !strings.HasPrefix(link, "http://"+addr+"/login?t=") {
		t.Errorf("the link %q is not on the console's address %s", link, addr)
	}
	_, page := openLink(t, link)
	if !strings.Contains(page, "Admin session") || !strings.Contains(page, mbox) {
		t.Errorf("the admin link's page:\n%s", page)
	}
	// The link works once.
	if resp, err := http.Get(link); err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a used link: %v %v", resp.Status, err)
	}
	// The daemon's log never has the link's token.
	token := strings.TrimPrefix(link[strings.Index(link, "t="):], "t=")
	if strings.Contains(d.stderr.String(), token) {
		t.Errorf("the daemon logged the link's token")
	}

	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	os.Chmod(e.dir, 0o755)
	os.Chmod(filepath.Dir(e.dir), 0o755)
	os.Chown(e.socket, 0, 65534) // nobody is in the socket's group
	bin := filepath.Join(e.dir, "relayd-for-nobody")
	b, _ := os.ReadFile(relaydBin)
	os.WriteFile(bin, b, 0o755)
	nobodyCfg := filepath.Join(e.dir, "nobody.toml")
	conf, _ := os.ReadFile(e.cfg)
	os.WriteFile(nobodyCfg, conf, 0o644)
	cmd := exec.Command(bin, "web-login", "-c", nobodyCfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	raw, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("web-login as nobody: %v\n%s", err, raw)
	}
	link = linkRE.FindString(string(raw))
	if !strings.Contains(string(raw), "read-only session") || link == "" {
		t.Fatalf("web-login as nobody:\n%s", raw)
	}
	hc, page := openLink(t, link)
	if !strings.Contains(page, "Read-only session") || strings.Contains(page, `action="/accounts/support/reauthorize"`) {
		t.Errorf("the read-only link's page:\n%s", page)
	}
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if csrf == nil {
		t.Fatal("no CSRF token on the page")
	}
	resp, err := hc.PostForm("http://"+addr+"/accounts/support/queue/hold", map[string][]string{"csrf": {csrf[1]}})
	if err != nil || resp.StatusCode != http.StatusForbidden {
		t.Errorf("a read-only session's hold: %v %v", resp.Status, err)
	}
	if !strings.Contains(d.stderr.String(), "uid 65534") {
		t.Errorf("the daemon's log does not say who asked for the read-only link")
	}
}
