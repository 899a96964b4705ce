package main

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// relayd doctor with no daemon running: every check passes on a good
// set-up (exit 0), the rotated refresh token is stored, --json has the
// agreed shape, and a revoked grant or a world-readable secret fails
// (exit 2) with a fix that names the cause. Nothing secret is printed.
func TestDoctorOffline(t *testing.T) {
	e := newEnv(t)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	before := e.grantStored().RefreshToken
	out, code := e.run("doctor", "-c", e.cfg)
	if code != 0 {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
	for _, want := range []string{"✓ config", "✓ state_dir", "relayd is not running", "✓ file.client_secret_file", "✓ tcp.imap",
		"✓ token_endpoint", "✓ clock", "✓ grant", "rotated the refresh token", "✓ login.imap", "passed"} {
		if !strings.Contains(out, want) {
			t.Errorf("doctor output lacks %q:\n%s", want, out)
		}
	}
	if g := e.grantStored(); g == nil || g.RefreshToken == before {
		t.Fatal("the refresh token the provider rotated during the check was not stored")
	}
	// The stored one works: the next run refreshes with it.
	out, code = e.run("doctor", "-c", e.cfg, "support", "--json")
	if code != 0 {
		t.Fatalf("doctor --json: exit %d\n%s", code, out)
	}
	var rs []map[string]any
	if err := json.Unmarshal([]byte(out), &rs); err != nil || len(rs) < 10 {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	for _, r := range rs {
		for _, k := range []string{"account", "check", "ok", "detail", "fix"} {
			if _, ok := r[k]; !ok {
				t.Errorf("result %v has no %q", r, k)
			}
		}
	}

	secret := filepath.Join(e.dir, "client.secret")
	os.Chmod(secret, 0o644)
	out, code = e.run("doctor", "-c", e.cfg)
	os.Chmod(secret, 0o600)
	if code != 2 || !strings.Contains(out, "✗ file.client_secret_file") || !strings.Contains(out, "fix: chmod o-r "+secret) {
		t.Errorf("world-readable secret: exit %d\n%s", code, out)
	}

	e.idp.Revoke(mbox)
	stored := e.grantStored()
	out, code = e.run("doctor", "-c", e.cfg)
	if code != 2 || !strings.Contains(out, "✗ grant") || !strings.Contains(out, "relayd authorize support") ||
		!strings.Contains(out, "– login.imap") {
		t.Errorf("revoked grant: exit %d\n%s", code, out)
	}
	if g := e.grantStored(); g == nil || g.RefreshToken != stored.RefreshToken {
		t.Error("a failed check changed the stored grant")
	}
	if out, code := e.run("doctor", "-c", e.cfg, "nosuch"); code != 2 || !strings.Contains(out, `no account "nosuch"`) {
		t.Errorf("unknown account: exit %d\n%s", code, out)
	}
	if n := e.sweepSecrets(); n < 3 {
		t.Errorf("only %d secrets swept", n)
	}
}

// With the daemon running, doctor's refresh is the daemon's: the IdP sees
// one refresh, and the daemon goes on with the rotated refresh token (a
// refresh it makes afterwards works); a reader of the status socket gets
// the token checks as skipped and causes no refresh at all.
func TestDoctorThroughDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as a reader of the status socket")
	}
	e := newEnv(t)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	os.Chmod(e.dir, 0o755)
	os.Chmod(filepath.Dir(e.dir), 0o755)
	d := e.serve()
	before := e.idp.Refreshes()
	out, code := e.run("doctor", "-c", e.cfg)
	if code != 0 || !strings.Contains(out, "relayd is running") || !strings.Contains(out, "✓ grant") || !strings.Contains(out, "✓ login.imap") {
		t.Fatalf("doctor: exit %d\n%s", code, out)
	}
	if n := e.idp.Refreshes() - before; n != 1 {
		t.Errorf("%d refreshes for one doctor run, want 1 (the daemon's)", n)
	}
	d.waitLog(t, `msg="status socket: doctor (refresh and upstream logins)" uid=0`, 10*time.Second)
	// The daemon holds the rotated refresh token: when its access token
	// is refused, its own refresh works and the login goes through.
	e.idp.RevokeAccessTokens(mbox)
	c, err := e.login(localPassword)
	if err != nil {
		t.Fatalf("IMAP login through the daemon after doctor's refresh: %v\n%s", err, d.stderr.String())
	}
	c.Close()
	if out, code := e.run("status", "--socket", e.socket); code != 0 {
		t.Errorf("status after doctor: exit %d\n%s", code, out)
	}

	// A reader: the socket's group, not an admin.
	os.Chown(e.socket, 0, 65534)
	bin := filepath.Join(e.dir, "relayd-for-nobody")
	b, _ := os.ReadFile(relaydBin)
	os.WriteFile(bin, b, 0o755)
	cfg := filepath.Join(e.dir, "nobody.toml")
	conf, _ := os.ReadFile(e.cfg)
	os.WriteFile(cfg, conf, 0o644)
	before = e.idp.Refreshes()
	cmd := exec.Command(bin, "doctor", "-c", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	o, err := cmd.CombinedOutput()
	e.record("relayd doctor as a reader", o)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 {
		t.Errorf("doctor as a reader: %v, want exit 1\n%s", err, o)
	}
	for _, want := range []string{"this user may only read", "– grant", "skipped: refreshing needs the status socket's admin role", "– login.imap", "✓ tcp.imap", "✓ clock"} {
		if !strings.Contains(string(o), want) {
			t.Errorf("doctor as a reader lacks %q:\n%s", want, o)
		}
	}
	if n := e.idp.Refreshes() - before; n != 0 {
		t.Errorf("a reader's doctor caused %d refreshes", n)
	}
	e.sweepSecrets()
}
