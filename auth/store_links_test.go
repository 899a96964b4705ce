package auth

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// plantedState is a state directory owned by an unprivileged user (as
// /var/lib/relayd belongs to relayd) and a root file outside it that the
// user's links point at. relayd authorize runs as root there.
func plantedState(t *testing.T) (state, target string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: the defence matters when root writes a directory another user owns (CI runs as root)")
	}
	state = filepath.Join(t.TempDir(), "state")
	os.Mkdir(state, 0o755)
	if err := os.Chown(state, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	target = filepath.Join(t.TempDir(), "shadow")
	os.WriteFile(target, []byte("root:secret\n"), 0o600)
	return state, target
}

func assertRootFileUntouched(t *testing.T, target string) {
	t.Helper()
	b, _ := os.ReadFile(target)
	fi, err := os.Stat(target)
	if err != nil {
		t.Fatal(err)
	}
	st := fi.Sys().(*syscall.Stat_t)
	if string(b) != "root:secret\n" || st.Uid != 0 || fi.Mode().Perm() != 0o600 {
		t.Errorf("link target changed: content %q, uid %d, mode %v", b, st.Uid, fi.Mode().Perm())
	}
}

// Root saving a grant into the service user's directory follows none of
// the user's links: not the lock, not the grant file.
func TestStoreRefusesPlantedLinks(t *testing.T) {
	g := &Grant{RefreshToken: "r", GrantedAt: time.Now()}

	t.Run("lock", func(t *testing.T) {
		state, target := plantedState(t)
		os.Symlink(target, filepath.Join(state, "support.lock"))
		err := (&Store{Dir: state}).Save("support", g)
		if err == nil || !strings.Contains(err.Error(), filepath.Join(state, "support.lock")) {
			t.Errorf("Save with support.lock -> %s = %v, want a refusal naming the link", target, err)
		}
		assertRootFileUntouched(t, target)
	})

	t.Run("grant file", func(t *testing.T) {
		state, target := plantedState(t)
		link := filepath.Join(state, "support.json")
		os.Symlink(target, link)
		s := &Store{Dir: state}
		if _, err := s.Load("support"); err == nil || !strings.Contains(err.Error(), link) {
			t.Errorf("Load with support.json -> %s = %v, want a refusal naming the link", target, err)
		}
		// Saving replaces the link itself, never writes through it.
		if err := s.Save("support", g); err != nil {
			t.Fatal(err)
		}
		assertRootFileUntouched(t, target)
		fi, err := os.Lstat(link)
		if err != nil || !fi.Mode().IsRegular() || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
			t.Errorf("support.json after Save: %v, %v; want a regular file of the directory's owner", fi, err)
		}
		if got, err := s.Load("support"); err != nil || got.RefreshToken != "r" {
			t.Errorf("Load after Save = %+v, %v", got, err)
		}
	})
}
