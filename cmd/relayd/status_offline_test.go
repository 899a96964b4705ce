package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
)

// With the daemon down, root and the state directory's owner get an
// offline view from the state directory (accounts, grant ages, queued
// mail), still with exit 3; anybody else gets "not running" only. No
// token is printed.
func TestStatusOffline(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run status as another user")
	}
	e := newEnv(t)
	smtpAddr := e.writeSMTPConfig("127.0.0.1:9", "1h", "2h")
	e.conf.Accounts = append(e.conf.Accounts, e.conf.Accounts[0])
	second := &e.conf.Accounts[1]
	second.Name, second.LocalUser = "billing", "billing"
	e.writeConfig()
	if out, code := e.run("authorize", "-c", e.cfg, "billing", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	d := e.serve()
	e.submitOne(smtpAddr)
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited

	out, code := e.run("status", "-c", e.cfg)
	if code != 3 || !strings.HasPrefix(out, "UNKNOWN: relayd is not running") || !strings.Contains(out, "offline view from "+e.conf.StateDir) {
		t.Fatalf("status with the daemon down, as root: exit %d\n%s", code, out)
	}
	for _, re := range []string{
		`(?m)^support\s+` + regexp.QuoteMeta(mbox) + `\s+custom\s+outgoing\s+none\s+-\s+0\s+1\s+0$`, // held: waits for authorize
		`(?m)^billing\s+\S+\s+custom\s+outgoing\s+granted \d+s ago\s+\d+s ago\s+0\s+0\s+0$`,
		`support: not authorized yet: run 'relayd authorize support'`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("offline status does not match %s:\n%s", re, out)
		}
	}
	for _, g := range []string{"access_token", "refresh_token"} {
		if strings.Contains(out, g) {
			t.Errorf("offline status shows %s:\n%s", g, out)
		}
	}
	for _, s := range e.secrets {
		if strings.Contains(out, s) {
			t.Errorf("offline status shows a secret:\n%s", out)
		}
	}

	// Somebody else (who may read the configuration) gets "not running".
	for d := e.dir; d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o011)
			defer os.Chmod(d, fi.Mode().Perm())
		}
	}
	cfg := filepath.Join(e.dir, "nobody.toml")
	conf, _ := os.ReadFile(e.cfg)
	os.WriteFile(cfg, conf, 0o644)
	bin := filepath.Join(e.dir, "relayd-for-nobody")
	b, _ := os.ReadFile(relaydBin)
	os.WriteFile(bin, b, 0o755)
	cmd := exec.Command(bin, "status", "-c", cfg)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	o, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 3 || !strings.HasPrefix(string(o), "UNKNOWN: relayd is not running") || strings.Contains(string(o), "offline view") {
		t.Errorf("status with the daemon down, as nobody: %v\n%s", err, o)
	}
}
