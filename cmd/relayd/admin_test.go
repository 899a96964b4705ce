package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A reload applies admin_group: once it is removed from the file, a member
// of the group (here nobody, whose group is nogroup) is refused what it was
// allowed before; an admin_group that does not exist is refused by the
// reload (the old one stays) and by check-config.
func TestReloadAppliesAdminGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as another user")
	}
	e := newEnv(t)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	withGroup := func(g string) {
		doc := e.conf.TOML()
		if g != "" {
			doc = "admin_group = \"" + g + "\"\n" + doc
		}
		if err := os.WriteFile(e.cfg, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	withGroup("nogroup")
	os.Chmod(e.dir, 0o755)
	os.Chmod(filepath.Dir(e.dir), 0o755)
	d := e.serve()
	os.Chown(e.socket, 0, 65534) // nobody may connect
	bin := filepath.Join(e.dir, "relayd-for-nobody")
	b, _ := os.ReadFile(relaydBin)
	os.WriteFile(bin, b, 0o755)
	nobodyCfg := filepath.Join(e.dir, "nobody.toml")
	conf, _ := os.ReadFile(e.cfg)
	os.WriteFile(nobodyCfg, conf, 0o644)
	asNobody := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("running relayd as nobody: %v", err)
		}
		return string(out), 0
	}
	if out, code := asNobody("queue", "-c", nobodyCfg, "hold", "support"); code != 0 {
		t.Fatalf("a member of admin_group: queue hold: exit %d %q", code, out)
	}

	withGroup("no-such-group-relayd")
	if out, code := e.run("check-config", e.cfg); code != 1 || !strings.Contains(out, `admin_group: group "no-such-group-relayd" does not exist`) {
		t.Errorf("check-config with an unknown admin_group: exit %d\n%s", code, out)
	}
	if out, code := e.run("reload", "-c", e.cfg); code == 0 || !strings.Contains(out, "admin_group") {
		t.Errorf("reload with an unknown admin_group: exit %d\n%s", code, out)
	}
	if out, code := asNobody("queue", "-c", nobodyCfg, "release", "support"); code != 0 {
		t.Errorf("after a refused reload, the old admin_group stays: queue release: exit %d %q", code, out)
	}

	withGroup("")
	if out, code := e.run("reload", "-c", e.cfg); code != 0 {
		t.Fatalf("reload: exit %d\n%s\n%s", code, out, d.stderr.String())
	}
	if out, code := asNobody("queue", "-c", nobodyCfg, "hold", "support"); code != 3 || !strings.Contains(out, "permission denied") {
		t.Errorf("admin_group removed by a reload, its member still acts as admin: exit %d %q", code, out)
	}
}
