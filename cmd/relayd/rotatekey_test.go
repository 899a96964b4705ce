package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/status"
)

// keyEnv is newEnv with key_file set in the test's directory and a second
// account, billing, on the same mailbox (another local user).
func keyEnv(t *testing.T) *env {
	t.Helper()
	e := newEnv(t)
	e.conf.KeyFile = filepath.Join(e.dir, "relayd.key")
	e.conf.Accounts = append(e.conf.Accounts, e.conf.Accounts[0])
	e.conf.Accounts[1].Name, e.conf.Accounts[1].LocalUser = "billing", "billing"
	e.writeConfig()
	return e
}

func (e *env) keyFile() string { return e.conf.KeyFile }

// keyID is the id of the key in key_file now.
func (e *env) keyID() string {
	e.t.Helper()
	k, err := auth.ReadKeyFile(e.keyFile())
	if err != nil {
		e.t.Fatal(err)
	}
	return k.ID()
}

// grantFile returns the bytes of account name's grant file.
func (e *env) grantFile(name string) []byte {
	e.t.Helper()
	b, err := os.ReadFile(filepath.Join(e.conf.StateDir, name+".json"))
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// assertUnder checks that every grant file is encrypted under key id and
// holds no refresh token in clear.
func (e *env) assertUnder(id string, tokens ...string) {
	e.t.Helper()
	for _, n := range []string{"support", "billing"} {
		b := e.grantFile(n)
		if !bytes.Contains(b, []byte(`"kid":"`+id+`"`)) {
			e.t.Errorf("%s.json is not under key %s: %s", n, id, b)
		}
		for _, tok := range append(tokens, "refresh_token") {
			if bytes.Contains(b, []byte(tok)) {
				e.t.Errorf("%s.json holds %q in clear", n, tok)
			}
		}
	}
}

// statusJSON is relayd status --json through the running daemon.
func (e *env) statusJSON() status.Status {
	e.t.Helper()
	out, _ := e.run("status", "-c", e.cfg, "--json")
	var st status.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		e.t.Fatalf("status --json: %v\n%s", err, out)
	}
	return st
}

// refreshes makes the running daemon refresh both grants: the upstream
// refuses the access tokens, so each login refreshes with the stored
// grant and logs in with the new token.
func (e *env) refreshes(d *daemonProc) {
	e.t.Helper()
	e.idp.RevokeAccessTokens(mbox)
	for _, user := range []string{"helpdesk", "billing"} {
		c, err := e.loginAs(user)
		if err != nil {
			e.t.Fatalf("login as %s after the access tokens were revoked = %v\n%s", user, err, d.stderr.String())
		}
		c.Logout().Wait()
		c.Close()
	}
}

func (e *env) loginAs(user string) (*imapclient.Client, error) {
	c, err := imapclient.DialInsecure(e.imapAddr, nil)
	if err != nil {
		return nil, err
	}
	if err := c.Login(user, localPassword).Wait(); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// rotate-key with relayd stopped, then running: every grant is rewritten
// under the new key, key_file replaced, nothing in clear, and everything
// still refreshes, before and after a restart.
func TestRotateKeyStoppedAndRunning(t *testing.T) {
	e := keyEnv(t)
	// No key yet: rotate-key creates it.
	out, code := e.run("rotate-key", "-c", e.cfg)
	if code != 0 || !strings.Contains(out, "0 grant(s) rewritten") {
		t.Fatalf("rotate-key with no key: %d %s", code, out)
	}
	first := e.keyID()
	if fi, _ := os.Stat(e.keyFile()); fi.Mode().Perm() != 0o640 {
		t.Errorf("key_file mode %v, want 0640", fi.Mode().Perm())
	}
	var rts []string
	for _, n := range []string{"support", "billing"} {
		rt := e.rtFile()
		b, _ := os.ReadFile(rt)
		rts = append(rts, strings.TrimSpace(string(b)))
		if out, code := e.run("authorize", "-c", e.cfg, n, "--refresh-token-file", rt); code != 0 {
			t.Fatalf("authorize %s: %s", n, out)
		}
	}
	e.assertUnder(first, rts...)

	// Stopped.
	out, code = e.run("rotate-key", "-c", e.cfg)
	second := e.keyID()
	if code != 0 || second == first || !strings.Contains(out, "2 grant(s) rewritten by relayd rotate-key (relayd is not running) under key "+second) {
		t.Fatalf("rotate-key, relayd stopped: %d %s", code, out)
	}
	e.assertUnder(second, rts...)
	if _, err := os.Stat(e.keyFile() + ".new"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("key_file.new left after the rotation: %v", err)
	}

	// Running, with a key of the admin's.
	d := e.serve()
	e.refreshes(d)
	if st := e.statusJSON(); !st.Encryption.Enabled || st.Encryption.KeyID != second {
		t.Errorf("status encryption = %+v, want key %s", st.Encryption, second)
	}
	mine := filepath.Join(e.dir, "mine.key")
	k, _ := auth.GenerateKey()
	os.WriteFile(mine, []byte(k.String()), 0o600)
	out, code = e.run("rotate-key", "-c", e.cfg, "--new-key", mine)
	if code != 0 || !strings.Contains(out, "2 grant(s) rewritten by the running daemon under key "+k.ID()) || e.keyID() != k.ID() {
		t.Fatalf("rotate-key --new-key, relayd running: %d %s", code, out)
	}
	e.assertUnder(k.ID(), rts...)
	e.refreshes(d) // the daemon stores the refreshed grants under the new key
	e.assertUnder(k.ID(), rts...)
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited

	d = e.serve()
	e.refreshes(d)
	for _, a := range e.statusJSON().Accounts {
		if a.State.NeedsAttention() {
			t.Errorf("after the restart: %s %s %s", a.Name, a.State, a.Advice)
		}
	}
}

// A rotation cut short by SIGKILL, in rotate-key (relayd stopped) and in
// the daemon (running), after the first grant was rewritten: key_file is
// unchanged, every grant still opens (the daemon starts with both
// accounts ok and refreshes them), and rotate-key run again finishes.
func TestRotateKeyKilledMidway(t *testing.T) {
	e := keyEnv(t)
	e.run("rotate-key", "-c", e.cfg)
	for _, n := range []string{"support", "billing"} {
		if out, code := e.run("authorize", "-c", e.cfg, n, "--refresh-token-file", e.rtFile()); code != 0 {
			t.Fatalf("authorize %s: %s", n, out)
		}
	}
	old := e.keyID()

	cmd := exec.Command(relaydBin, "rotate-key", "-c", e.cfg)
	cmd.Env = append(os.Environ(), "RELAYD_FAILPOINT=rekey:1")
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("rotate-key with the failpoint: %v\n%s", err, out)
	}
	pending, err := auth.ReadKeyFile(e.keyFile() + ".new")
	if err != nil || e.keyID() != old {
		t.Fatalf("after the kill: key_file %s (want %s unchanged), key_file.new %v", e.keyID(), old, err)
	}
	if !bytes.Contains(e.grantFile("billing"), []byte(pending.ID())) || !bytes.Contains(e.grantFile("support"), []byte(old)) {
		t.Fatalf("want billing under the pending key, support under the old:\n%s\n%s", e.grantFile("billing"), e.grantFile("support"))
	}

	// The daemon, killed midway through its own rotation.
	d := e.serveEnv([]string{"RELAYD_FAILPOINT=rekey:1"})
	for _, a := range e.statusJSON().Accounts {
		if a.State.NeedsAttention() {
			t.Errorf("after rotate-key was killed: %s %s %s", a.Name, a.State, a.Advice)
		}
	}
	e.refreshes(d)
	out2, code := e.run("rotate-key", "-c", e.cfg, "--new-key", e.keyFile()+".new")
	<-d.exited
	if code == 0 || e.keyID() != old {
		t.Fatalf("rotate-key whose daemon was killed: exit %d, key_file %s\n%s", code, e.keyID(), out2)
	}

	d = e.serve()
	for _, a := range e.statusJSON().Accounts {
		if a.State.NeedsAttention() {
			t.Errorf("after the daemon was killed mid-rotation: %s %s %s", a.Name, a.State, a.Advice)
		}
	}
	e.refreshes(d)
	out3, code := e.run("rotate-key", "-c", e.cfg)
	if code != 0 || !strings.Contains(out3, "resuming the rotation") || e.keyID() != pending.ID() {
		t.Fatalf("rotate-key resumed: %d %s", code, out3)
	}
	e.assertUnder(pending.ID())
	e.refreshes(d)
}

// A caller who cannot read the key, with relayd stopped, is told what to
// do, and nothing is written; root reads the grants through the key.
func TestOfflineWithoutTheKey(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run relayd as another user")
	}
	e := keyEnv(t)
	e.run("rotate-key", "-c", e.cfg)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	before := e.grantFile("support")
	d := e.serve()
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
	out, _ := e.run("status", "-c", e.cfg)
	if !regexp.MustCompile(`(?m)^support\s+\S+\s+custom\s+incoming\s+granted \d+s ago`).MatchString(out) {
		t.Errorf("offline status as root does not show the decrypted grant:\n%s", out)
	}

	for d := e.dir; d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o011)
			defer os.Chmod(d, fi.Mode().Perm())
		}
	}
	os.Remove(e.socket) // relayd stopped: nothing to connect to
	os.Chmod(e.cfg, 0o644)
	os.Chmod(filepath.Join(e.dir, "client.secret"), 0o644)
	rt := e.rtFile()
	os.Chmod(rt, 0o644)
	bin := filepath.Join(e.dir, "relayd-for-nobody")
	b, _ := os.ReadFile(relaydBin)
	os.WriteFile(bin, b, 0o755)
	for _, args := range [][]string{
		{"authorize", "-c", e.cfg, "support", "--refresh-token-file", rt},
		{"doctor", "-c", e.cfg, "support"},
	} {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		o, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(o), e.keyFile()) || !strings.Contains(string(o), "start relayd") {
			t.Errorf("relayd %s as nobody without the key: %v\n%s", args[0], err, o)
		}
	}
	if after := e.grantFile("support"); !bytes.Equal(before, after) {
		t.Errorf("the grant file changed")
	}
}
