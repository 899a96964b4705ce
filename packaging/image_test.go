package packaging

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
)

// imageUID is the uid and gid of the image's user relayd
// (packaging/image/build.sh).
const imageUID = 10001

// podmanEnv runs buildah and podman on a storage of the test's own (vfs:
// no mounts left behind, no clash with other images on the machine).
type podmanEnv struct {
	t      *testing.T
	podman string
	env    []string
}

func newPodmanEnv(t *testing.T, podman string) *podmanEnv {
	t.Helper()
	dir := t.TempDir()
	conf := filepath.Join(dir, "storage.conf")
	text := fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n", filepath.Join(dir, "graph"), filepath.Join(dir, "run"))
	if err := os.WriteFile(conf, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	return &podmanEnv{t: t, podman: podman, env: append(os.Environ(), "CONTAINERS_STORAGE_CONF="+conf)}
}

func (p *podmanEnv) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Env = p.env
	return cmd
}

// run runs podman and returns its output (stdout and stderr) and exit code.
func (p *podmanEnv) run(args ...string) (string, int) {
	p.t.Helper()
	out, err := p.command(p.podman, args...).CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		p.t.Fatalf("podman %v: %v", args, err)
	}
	return string(out), 0
}

// ulimits are explicit --ulimit values within this process's hard limits:
// podman's defaults exceed them on this machine class, and runc then
// fails with "error setting rlimits".
func ulimits() []string {
	var args []string
	for _, l := range []struct {
		name     string
		resource int
		want     uint64
	}{{"nofile", syscall.RLIMIT_NOFILE, 65536}, {"nproc", 6 /* RLIMIT_NPROC */, 4096}} {
		var rl syscall.Rlimit
		v := l.want
		if syscall.Getrlimit(l.resource, &rl) == nil && rl.Max < v {
			v = rl.Max
		}
		args = append(args, "--ulimit", fmt.Sprintf("%s=%d:%d", l.name, v, v))
	}
	return args
}

// make image builds relayd's image FROM scratch with buildah; podman runs
// it as it comes (a non-root user, the state directory as a volume) with
// a configuration mounted at /etc/relayd whose mailbox was never
// authorized: relayd status in the container is critical (2), and the
// image's HEALTHCHECK, a liveness check, passes all the same.
func TestImage(t *testing.T) {
	realserver.RequireBinary(t, "buildah", "buildah")
	podman := realserver.RequireBinary(t, "podman", "podman")
	realserver.RequireBinary(t, "runc", "runc")
	if os.Geteuid() != 0 {
		t.Skip("runs podman as root (--runtime runc --network host), as CI does")
	}
	p := newPodmanEnv(t, podman)
	image := fmt.Sprintf("localhost/relayd-test:%d", os.Getpid())
	mk := p.command("make", "-C", "..", "image", "BUILD="+t.TempDir(), "IMAGE="+image, "VERSION=0.0.0~test")
	if out, err := mk.CombinedOutput(); err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	t.Cleanup(func() { p.run("rmi", "-f", image) })

	out, code := p.run("image", "inspect", image)
	var inspected []struct {
		Config struct {
			User    string
			Volumes map[string]any
		}
		HealthCheck struct{ Test []string }
	}
	if code != 0 || json.Unmarshal([]byte(out), &inspected) != nil || len(inspected) != 1 {
		t.Fatalf("podman image inspect = %d:\n%s", code, out)
	}
	img := inspected[0]
	if img.Config.User != fmt.Sprintf("%d:%d", imageUID, imageUID) {
		t.Errorf("the image runs as %q", img.Config.User)
	}
	for _, v := range []string{"/etc/relayd", "/var/lib/relayd"} {
		if _, ok := img.Config.Volumes[v]; !ok {
			t.Errorf("%s is not a volume: %v", v, img.Config.Volumes)
		}
	}
	if want := []string{"CMD", "/usr/bin/relayd", "status", "--alive", "--socket", "/run/relayd/status.sock"}; !slices.Equal(img.HealthCheck.Test, want) {
		t.Errorf("HEALTHCHECK %q, want %q", img.HealthCheck.Test, want)
	}

	// The configuration, as an admin would mount it: root:relayd 0640.
	// The network is the host's: the listener needs a free port here.
	cfgDir := t.TempDir()
	imapAddr, err := realserver.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte("local-pw"), bcrypt.MinCost)
	cfg := testkit.Config{
		StateDir: "/var/lib/relayd", StatusSocket: "/run/relayd/status.sock",
		IMAPListen: []string{imapAddr},
		Accounts: []testkit.Account{{
			Name: "support", Provider: "custom", Email: "support@example.com", ClientID: "relayd-test-client",
			TokenURL: "http://127.0.0.1:9/token", IMAPServer: "127.0.0.1:9", Security: "none", Direction: "incoming",
			LocalUser: "helpdesk", LocalPasswordHash: string(hash),
		}},
	}
	if err := os.WriteFile(filepath.Join(cfgDir, "relayd.toml"), []byte(cfg.TOML()), 0o640); err != nil {
		t.Fatal(err)
	}
	for f, mode := range map[string]os.FileMode{cfgDir: 0o750, filepath.Join(cfgDir, "relayd.toml"): 0o640} {
		if err := os.Chown(f, 0, imageUID); err != nil {
			t.Fatal(err)
		}
		os.Chmod(f, mode)
	}

	name := fmt.Sprintf("relayd-test-%d", os.Getpid())
	args := append([]string{"run", "--name", name, "--runtime", "runc", "--network", "host"}, ulimits()...)
	args = append(args, "-v", cfgDir+":/etc/relayd:ro", image)
	ctr := p.command(podman, args...)
	logs := startLogged(t, ctr)
	t.Cleanup(func() {
		p.run("rm", "-f", "-v", name)
		<-logs.exited
		t.Logf("container output:\n%s", logs.out.String())
	})
	logs.waitFor(t, `msg="relayd started"`, time.Minute)

	if out, code := p.run("healthcheck", "run", name); code != 0 {
		t.Errorf("podman healthcheck run = %d:\n%s", code, out)
	}
	if out, code := p.run("exec", name, "relayd", "status"); code != 2 || !strings.Contains(out, "support") {
		t.Errorf("relayd status in the container = %d, want 2 (a mailbox never authorized):\n%s", code, out)
	}
	if out, code := p.run("exec", name, "relayd", "status", "--alive"); code != 0 || !strings.Contains(out, "relayd is alive") {
		t.Errorf("relayd status --alive in the container = %d:\n%s", code, out)
	}
	out, _ = p.run("inspect", "--format", "{{.State.Pid}}", name)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%s/status", strings.TrimSpace(out)))
	if err != nil || !strings.Contains(string(st), fmt.Sprintf("\nUid:\t%d\t", imageUID)) {
		t.Errorf("relayd in the container does not run as %d: %v\n%s", imageUID, err, st)
	}

	// podman stop sends SIGTERM: relayd shuts down in its two phases and
	// exits 0.
	if out, code := p.run("stop", "--time", "30", name); code != 0 {
		t.Errorf("podman stop = %d:\n%s", code, out)
	}
	if out, _ := p.run("inspect", "--format", "{{.State.ExitCode}}", name); strings.TrimSpace(out) != "0" {
		t.Errorf("relayd exited %s after SIGTERM", out)
	}
}

// logged is a process whose output is scanned line by line as it comes.
type logged struct {
	out    *testkit.SyncBuffer
	lines  chan struct{} // signalled (without blocking) after each line
	exited chan struct{}
}

func startLogged(t *testing.T, cmd *exec.Cmd) *logged {
	t.Helper()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &logged{out: &testkit.SyncBuffer{}, lines: make(chan struct{}, 1), exited: make(chan struct{})}
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			l.out.Write(append(sc.Bytes(), '\n'))
			select {
			case l.lines <- struct{}{}:
			default:
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); <-scanned; close(l.exited) }()
	return l
}

// waitFor waits until the output has a line containing s, woken by each
// new line; it fails the test when the process exits or timeout passes
// first.
func (l *logged) waitFor(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !strings.Contains(l.out.String(), s) {
		select {
		case <-l.lines:
		case <-l.exited:
			if strings.Contains(l.out.String(), s) {
				return
			}
			t.Fatalf("exited before %q:\n%s", s, l.out.String())
		case <-deadline.C:
			t.Fatalf("no %q within %s:\n%s", s, timeout, l.out.String())
		}
	}
}
