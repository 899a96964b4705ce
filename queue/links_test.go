package queue

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/relayd/relayd/auth"
)

// An offline relayd queue command runs as root in a spool the service
// user owns; none of the user's planted links is followed: not queue/lock
// (which relayd truncates and writes its PID into), not the queue
// directory, not tmp/.
func TestOpenRefusesPlantedLinks(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: the defence matters when root works in a directory another user owns (CI runs as root)")
	}
	for _, tc := range []struct{ name, link string }{
		{"lock", "queue/lock"},
		{"queue", "queue"},
		{"tmp", "queue/tmp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := filepath.Join(t.TempDir(), "state")
			os.MkdirAll(filepath.Join(state, "queue"), 0o700)
			os.Chown(state, 65534, 65534)
			os.Chown(filepath.Join(state, "queue"), 65534, 65534)
			outside := t.TempDir()
			target := filepath.Join(outside, "shadow")
			os.WriteFile(target, []byte("root:secret\n"), 0o600)
			link := filepath.Join(state, tc.link)
			if tc.name == "lock" {
				os.Symlink(target, link)
			} else {
				os.RemoveAll(link)
				os.Symlink(outside, link)
			}
			q, err := Open(Options{Dir: filepath.Join(state, "queue"), Accounts: func(string) *auth.Account { return nil }})
			if err == nil {
				q.Close()
				t.Fatalf("Open with %s planted as a link = nil error, want a refusal", tc.link)
			}
			if !strings.Contains(err.Error(), link) {
				t.Errorf("Open error = %q, want it to name %s", err, link)
			}
			b, _ := os.ReadFile(target)
			for _, p := range []string{target, outside} {
				fi, _ := os.Stat(p)
				if uid := fi.Sys().(*syscall.Stat_t).Uid; uid != 0 {
					t.Errorf("%s now belongs to uid %d", p, uid)
				}
			}
			if string(b) != "root:secret\n" {
				t.Errorf("link target now holds %q", b)
			}
		})
	}
}
