package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A child of the test binary started with RELAYD_TEST_DROP_TO runs
// dropToStateOwner on that directory and prints who it is afterwards.
func init() {
	dir := os.Getenv("RELAYD_TEST_DROP_TO")
	if dir == "" {
		return
	}
	if err := dropToStateOwner(dir); err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	groups, _ := os.Getgroups()
	fmt.Printf("uid=%d euid=%d gid=%d egid=%d groups=%v\n", os.Getuid(), os.Geteuid(), os.Getgid(), os.Getegid(), groups)
	os.Exit(0)
}

// Root running authorize or an offline queue command in a state directory
// another user owns becomes that user, groups and all, before touching it.
func TestDropToStateOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (CI runs as root)")
	}
	run := func(dir string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), "RELAYD_TEST_DROP_TO="+dir)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("child: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	base := t.TempDir()
	state := filepath.Join(base, "state")
	os.Mkdir(state, 0o700)
	if err := os.Chown(state, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	// Behind a directory closed to the owner, root stays root (the daemon
	// could not use the directory either; statedir protects root there).
	if got := run(state); !strings.HasPrefix(got, "uid=0 euid=0") {
		t.Errorf("with a closed directory above: %s, want root", got)
	}
	for p := base; p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o711)
	}
	if got, want := run(state), "uid=65534 euid=65534 gid=65534 egid=65534 groups=[65534]"; got != want {
		t.Errorf("after the drop: %s, want %s", got, want)
	}
	// A root-owned or missing state directory: root stays root.
	if got := run(t.TempDir()); !strings.HasPrefix(got, "uid=0 euid=0") {
		t.Errorf("with a root-owned state_dir: %s, want root", got)
	}
	if got := run(filepath.Join(t.TempDir(), "missing")); !strings.HasPrefix(got, "uid=0 euid=0") {
		t.Errorf("with no state_dir yet: %s, want root", got)
	}
}
