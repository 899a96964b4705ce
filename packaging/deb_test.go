package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/relayd/relayd/internal/realserver"
)

// make deb builds a package that holds what the units expect, marks the
// configuration as a conffile, and installs into a throwaway root: the
// relayd user and its directories are created there by the package's own
// scripts.
func TestDebPackage(t *testing.T) {
	realserver.RequireBinary(t, "scdoc", "scdoc")
	dpkg := realserver.RequireBinary(t, "dpkg", "dpkg")
	realserver.RequireBinary(t, "systemd-sysusers", "systemd")
	build := t.TempDir()
	mk := exec.Command("make", "-C", "..", "deb", "BUILD="+build, "VERSION=0.0.0~test")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(build, "*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %v", debs)
	}
	deb := debs[0]
	lintian := realserver.RequireBinary(t, "lintian", "lintian")
	if out, err := exec.Command(lintian, "--fail-on", "error", deb).CombinedOutput(); err != nil {
		t.Errorf("lintian --fail-on error: %v\n%s", err, out)
	}
	info, _ := exec.Command("dpkg-deb", "-I", deb).CombinedOutput()
	conffiles, _ := exec.Command("dpkg-deb", "--ctrl-tarfile", deb).Output()
	if !strings.Contains(string(info), "Version: 0.0.0~test") || !strings.Contains(string(conffiles), "conffiles") {
		t.Errorf("dpkg-deb -I:\n%s", info)
	}
	listing, _ := exec.Command("dpkg-deb", "-c", deb).CombinedOutput()
	for _, f := range []string{"./usr/bin/relayd", "./usr/lib/systemd/system/relayd.service", "./usr/lib/systemd/system/relayd-imap.socket",
		"./usr/lib/systemd/system/relayd-smtp.socket", "./usr/lib/sysusers.d/relayd.conf", "./usr/lib/tmpfiles.d/relayd.conf",
		"./etc/relayd/relayd.toml", "./usr/share/man/man8/relayd.8.gz", "./usr/share/man/man5/relayd.toml.5.gz",
		"./usr/share/bash-completion/completions/relayd", "./usr/share/zsh/vendor-completions/_relayd",
		"./usr/share/doc/relayd/copyright", "./usr/share/doc/relayd/changelog.gz"} {
		if !strings.Contains(string(listing), " "+f+"\n") {
			t.Errorf("the package lacks %s", f)
		}
	}

	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	os.WriteFile(filepath.Join(root, "var/lib/dpkg/status"), nil, 0o644)
	out, err := exec.Command(dpkg, "--root="+root, "--force-script-chrootless", "--force-not-root", "--log=/dev/null", "-i", deb).CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg --root -i: %v\n%s", err, out)
	}
	ctrl, _ := os.ReadFile(filepath.Join(root, "var/lib/dpkg/info/relayd.conffiles"))
	if strings.TrimSpace(string(ctrl)) != "/etc/relayd/relayd.toml" {
		t.Errorf("conffiles = %q", ctrl)
	}
	passwd, _ := os.ReadFile(filepath.Join(root, "etc/passwd"))
	if !strings.Contains(string(passwd), "relayd:x:") {
		t.Fatalf("the relayd user was not created:\n%s\n%s", passwd, out)
	}
	fi, err := os.Stat(filepath.Join(root, "var/lib/relayd"))
	if err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid == 0 {
		t.Errorf("/var/lib/relayd: %v %v", fi, err)
	}
	if b, err := exec.Command(filepath.Join(root, "usr/bin/relayd"), "--version").Output(); err != nil ||
		!strings.HasPrefix(string(b), "relayd 0.0.0~test (commit ") {
		t.Errorf("installed relayd --version = %q, %v", b, err)
	}
	out, _ = exec.Command(dpkg, "--root="+root, "--force-script-chrootless", "--force-not-root", "--log=/dev/null", "--purge", "relayd").CombinedOutput()
	if !strings.Contains(string(out), "/var/lib/relayd (grants and any queued mail) is left in place") {
		t.Errorf("purge does not say the state stays:\n%s", out)
	}
	if _, err := os.Stat(filepath.Join(root, "var/lib/relayd")); err != nil {
		t.Error("purge removed the state directory")
	}
}

// make rpm builds from the same recipe an rpm holding the same files.
func TestRpmPackage(t *testing.T) {
	realserver.RequireBinary(t, "scdoc", "scdoc")
	rpm := realserver.RequireBinary(t, "rpm", "rpm")
	build := t.TempDir()
	if out, err := exec.Command("make", "-C", "..", "rpm", "BUILD="+build, "VERSION=0.0.0").CombinedOutput(); err != nil {
		t.Fatalf("make rpm: %v\n%s", err, out)
	}
	rpms, _ := filepath.Glob(filepath.Join(build, "*.rpm"))
	if len(rpms) != 1 {
		t.Fatalf("make rpm made %v", rpms)
	}
	out, err := exec.Command(rpm, "-qlp", rpms[0]).CombinedOutput()
	for _, f := range []string{"/usr/bin/relayd", "/usr/lib/systemd/system/relayd.service", "/etc/relayd/relayd.toml",
		"/usr/lib/sysusers.d/relayd.conf", "/usr/share/man/man8/relayd.8.gz"} {
		if err != nil || !strings.Contains(string(out), f+"\n") {
			t.Errorf("rpm -qlp lacks %s: %v\n%s", f, err, out)
		}
	}
	cfg, _ := exec.Command(rpm, "-qcp", rpms[0]).CombinedOutput()
	if !strings.Contains(string(cfg), "/etc/relayd/relayd.toml") {
		t.Errorf("the configuration is not a config file in the rpm:\n%s", cfg)
	}
}
