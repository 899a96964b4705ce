package packaging

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/relayd/relayd/internal/realserver"
)

// The service unit's hardening: systemd-analyze security rates its exposure
// 2.0 or less.
func TestServiceExposure(t *testing.T) {
	sa := realserver.RequireBinary(t, "systemd-analyze", "systemd")
	out, err := exec.Command(sa, "security", "--offline=true", "systemd/relayd.service").CombinedOutput()
	m := regexp.MustCompile(`Overall exposure level for relayd.service: ([0-9.]+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	if v, _ := strconv.ParseFloat(string(m[1]), 64); v > 2.0 {
		t.Errorf("exposure %.1f, want 2.0 or less:\n%s", v, out)
	}
}

// The units pass systemd-analyze verify in a root holding the binary they
// start and the system's units.
func TestUnitsVerify(t *testing.T) {
	sa := realserver.RequireBinary(t, "systemd-analyze", "systemd")
	root := t.TempDir()
	for _, d := range []string{"usr/bin", "etc/systemd/system", "usr/lib/systemd"} {
		os.MkdirAll(filepath.Join(root, d), 0o755)
	}
	if out, err := exec.Command("go", "build", "-o", filepath.Join(root, "usr/bin/relayd"), "../cmd/relayd").CombinedOutput(); err != nil {
		t.Fatalf("building relayd: %v\n%s", err, out)
	}
	system := "/lib/systemd/system"
	if _, err := os.Stat(system); err != nil {
		t.Skipf("no %s to verify against", system)
	}
	if out, err := exec.Command("cp", "-r", system, filepath.Join(root, "usr/lib/systemd/")).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	units := []string{"relayd.service", "relayd-imap.socket", "relayd-smtp.socket"}
	args := []string{"verify", "--man=no", "--root=" + root}
	for _, u := range units {
		b, err := os.ReadFile(filepath.Join("systemd", u))
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(root, "etc/systemd/system", u)
		os.WriteFile(dst, b, 0o644)
		args = append(args, dst)
	}
	if out, err := exec.Command(sa, args...).CombinedOutput(); err != nil || len(out) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The man pages build with scdoc, as the package build does.
func TestManPagesBuild(t *testing.T) {
	scdoc := realserver.RequireBinary(t, "scdoc", "scdoc")
	for _, page := range []string{"man/relayd.8.scd", "man/relayd.toml.5.scd", "man/relayd-setup.7.scd"} {
		in, err := os.Open(page)
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(scdoc)
		cmd.Stdin = in
		out, err := cmd.Output()
		in.Close()
		if err != nil || !regexp.MustCompile(`(?m)^\.TH "relayd`).Match(out) {
			t.Errorf("scdoc %s: %v\n%.300s", page, err, out)
		}
	}
}

// /run/relayd lets every user through (0751) without listing it: the
// sendmail socket (0666, submit only, peer credentials checked) must be
// reachable by the users [sendmail] allow names, such as www-data, while
// the status socket stays 0660. Unit, tmpfiles and image agree.
func TestRuntimeDirectoryTraversable(t *testing.T) {
	for file, want := range map[string]string{
		"systemd/relayd.service": "RuntimeDirectoryMode=0751\n",
		"tmpfiles.d/relayd.conf": "d /run/relayd 0751 relayd relayd -\n",
		"image/build.sh":         `install -d -m 0751 -o "$uid" -g "$uid" "$root/run/relayd"`,
	} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), want) {
			t.Errorf("%s does not make /run/relayd 0751 (%q)", file, strings.TrimSpace(want))
		}
	}
}
