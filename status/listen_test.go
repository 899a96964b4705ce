package status

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Something at status_socket's path that is not a socket is refused with
// an error naming the path, and left as it was; a stale socket is
// replaced.
func TestListenRefusesNonSocket(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "relayd.toml")
	if err := os.WriteFile(target, []byte("precious\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link.sock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	sub := filepath.Join(dir, "dir.sock")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ path, kind string }{
		{target, "a regular file"}, {link, "a symbolic link"}, {sub, "a directory"},
	} {
		ln, err := Listen(tc.path)
		if err == nil {
			ln.Close()
			t.Errorf("Listen(%s) = nil, want an error", tc.kind)
			continue
		}
		if !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), tc.kind+", not a socket") {
			t.Errorf("Listen(%s) = %q, want the path and what is there", tc.kind, err)
		}
	}
	if b, err := os.ReadFile(target); err != nil || string(b) != "precious\n" {
		t.Errorf("the file at status_socket = %q, %v; want it untouched", b, err)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode().Type() != os.ModeSymlink {
		t.Errorf("the symlink at status_socket = %v, %v; want it untouched", fi, err)
	}
	if fi, err := os.Lstat(sub); err != nil || !fi.IsDir() {
		t.Errorf("the directory at status_socket = %v, %v; want it untouched", fi, err)
	}

	// A socket nothing listens on is a crash's leftover: replaced.
	stale := filepath.Join(dir, "stale.sock")
	old, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	old.SetUnlinkOnClose(false)
	old.Close()
	ln, err := Listen(stale)
	if err != nil {
		t.Fatalf("Listen(stale socket) = %v", err)
	}
	ln.Close()
}

// The socket is 0660 from the moment it is bound (no chmod by path after
// the fact), whatever the process's umask.
func TestListenSocketMode(t *testing.T) {
	old := syscall.Umask(0o002)
	defer syscall.Umask(old)
	path := filepath.Join(t.TempDir(), "status.sock")
	ln, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("status socket mode = %v, want a socket, 0660", fi.Mode())
	}
}
