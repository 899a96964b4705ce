package statedir

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// nobody is the unprivileged owner the tests give the state directory.
const nobody = 65534

// ownedState returns a state directory that belongs to an unprivileged
// user, as /var/lib/relayd belongs to relayd, and a root file outside it
// that a planted link points at. The tests need root.
func ownedState(t *testing.T) (state, target string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: relayd's symlink defences matter when root works in a directory another user owns (CI runs as root)")
	}
	state = filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(state, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(state, nobody, nobody); err != nil {
		t.Fatal(err)
	}
	target = filepath.Join(t.TempDir(), "shadow")
	if err := os.WriteFile(target, []byte("root:secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return state, target
}

// assertUntouched fails when target's content, owner or mode changed.
func assertUntouched(t *testing.T, target string) {
	t.Helper()
	b, err := os.ReadFile(target)
	if err != nil || string(b) != "root:secret\n" {
		t.Errorf("target content = %q, %v; want it untouched", b, err)
	}
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if st.Uid != 0 || st.Gid != 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("target now uid %d gid %d mode %v; want root:root 0600", st.Uid, st.Gid, fi.Mode().Perm())
	}
}

func TestOpenFileRefusesPlantedEntries(t *testing.T) {
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, path, target string)
		flag  int
	}{
		{"symlink, create", symlink, os.O_CREATE | os.O_RDWR},
		{"symlink, exclusive create", symlink, os.O_CREATE | os.O_EXCL | os.O_RDWR},
		{"symlink, truncate", symlink, os.O_CREATE | os.O_RDWR | os.O_TRUNC},
		{"symlink, read", symlink, os.O_RDONLY},
		{"hard link", func(t *testing.T, path, target string) {
			if err := os.Link(target, path); err != nil {
				t.Skipf("cannot make a hard link across the test's directories: %v", err)
			}
		}, os.O_CREATE | os.O_RDWR},
		{"fifo", func(t *testing.T, path, _ string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, os.O_RDONLY},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state, target := ownedState(t)
			if tc.name == "hard link" {
				// A hard link needs one file system: put the target
				// beside the state directory.
				target = filepath.Join(filepath.Dir(state), "shadow")
				os.WriteFile(target, []byte("root:secret\n"), 0o600)
			}
			path := filepath.Join(state, "x.lock")
			tc.plant(t, path, target)
			d, err := Open(state)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			f, err := d.OpenFile("x.lock", tc.flag, 0o600)
			if err == nil {
				f.Close()
				t.Fatalf("OpenFile(%s) = nil error, want a refusal", tc.name)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("OpenFile error = %q, want it to name %s", err, path)
			}
			assertUntouched(t, target)
		})
	}
}

func symlink(t *testing.T, path, target string) {
	t.Helper()
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
}

// A directory link is refused, and the directory it points at keeps its
// owner.
func TestSubRefusesLink(t *testing.T) {
	state, _ := ownedState(t)
	rootDir := t.TempDir()
	symlink(t, filepath.Join(state, "queue"), rootDir)
	d, err := Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.Sub("queue", true); err == nil || !strings.Contains(err.Error(), filepath.Join(state, "queue")) {
		t.Fatalf("Sub(queue -> %s) = %v, want a refusal naming the link", rootDir, err)
	}
	fi, _ := os.Stat(rootDir)
	if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
		t.Errorf("linked directory now belongs to uid %d", uid)
	}
}

// What root creates in another user's directory is theirs, by descriptor.
func TestCreatedFilesGetTheOwner(t *testing.T) {
	state, _ := ownedState(t)
	d, err := Open(state)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	f, err := d.CreateTemp(".x.tmp")
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	sub, err := d.Sub("queue", true)
	if err != nil {
		t.Fatal(err)
	}
	sub.Close()
	for _, p := range []string{f.Name(), filepath.Join(state, "queue")} {
		fi, err := os.Lstat(p)
		if err != nil {
			t.Fatal(err)
		}
		if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != nobody {
			t.Errorf("%s belongs to uid %d, want %d (the state directory's owner)", p, uid, nobody)
		}
	}
}

func TestCheckPerms(t *testing.T) {
	base := t.TempDir()
	os.Chmod(base, 0o755)
	state := filepath.Join(base, "state")
	os.Mkdir(state, 0o700)
	if err := CheckPerms(state); err != nil {
		t.Fatalf("CheckPerms(0700 under 0755) = %v", err)
	}
	if err := CheckPerms(filepath.Join(base, "not-yet")); err != nil {
		t.Fatalf("CheckPerms(missing) = %v, want nil (relayd makes it 0700)", err)
	}
	os.Chmod(state, 0o777)
	err := CheckPerms(state)
	if err == nil || !strings.Contains(err.Error(), "chmod go-w "+state) {
		t.Errorf("CheckPerms(0777) = %v, want the chmod that fixes it", err)
	}
	os.Chmod(state, 0o700)
	os.Chmod(base, 0o775)
	err = CheckPerms(state)
	if err == nil || !strings.Contains(err.Error(), "chmod go-w "+base) {
		t.Errorf("CheckPerms(parent 0775) = %v, want the chmod that fixes the parent", err)
	}
	// A root-owned sticky directory above (as /tmp) is safe.
	if os.Geteuid() == 0 {
		os.Chmod(base, 0o777|os.ModeSticky)
		if err := CheckPerms(state); err != nil {
			t.Errorf("CheckPerms(under a sticky root directory) = %v", err)
		}
	}
}

// state_dir may be a link to a directory elsewhere (another disk): the
// link is followed, and the way to its target is checked as well.
func TestStateDirLink(t *testing.T) {
	base := t.TempDir()
	os.Chmod(base, 0o755)
	real := filepath.Join(base, "real")
	os.Mkdir(real, 0o700)
	link := filepath.Join(base, "state")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	d, err := Open(link)
	if err != nil {
		t.Fatalf("Open(a state_dir that is a link) = %v", err)
	}
	d.Close()
	if err := CheckPerms(link); err != nil {
		t.Errorf("CheckPerms(link to a safe directory) = %v", err)
	}
	os.Chmod(real, 0o777)
	if err := CheckPerms(link); err == nil || !strings.Contains(err.Error(), "chmod go-w "+real) {
		t.Errorf("CheckPerms(link to a 0777 directory) = %v, want the chmod for %s", err, real)
	}
}

// MountID names the mount a directory is on: the same for two directories
// of one file system, another for /proc.
func TestMountID(t *testing.T) {
	open := func(path string) *Dir {
		d, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { d.Close() })
		return d
	}
	base := t.TempDir()
	os.Mkdir(filepath.Join(base, "sub"), 0o700)
	a, err1 := open(base).MountID()
	b, err2 := open(filepath.Join(base, "sub")).MountID()
	if err1 != nil || err2 != nil || a == 0 || a != b {
		t.Errorf("MountID() = %d, %v and %d, %v; want one non-zero ID", a, err1, b, err2)
	}
	if p, err := open("/proc").MountID(); err != nil || p == a {
		t.Errorf("MountID(/proc) = %d, %v; want another mount than %d", p, err, a)
	}
}
