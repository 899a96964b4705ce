package queue

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
)

// copyDir copies the files of a testdata spool into a fresh directory.
func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	files, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if f.IsDir() {
			continue // tmp/, empty
		}
		b, err := os.ReadFile(filepath.Join(src, f.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, f.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

// A spool written by relayd before reply codes were fields (testdata/
// spool-v1, made by that version) still loads, with nothing lost.
func TestSpoolV1Loads(t *testing.T) {
	dir := copyDir(t, "testdata/spool-v1")
	q, err := Open(Options{Dir: dir, Accounts: func(string) *auth.Account { return nil }})
	if err != nil {
		t.Fatalf("Open(spool-v1) = %v", err)
	}
	defer q.Close()
	l := q.List()
	if len(l) != 3 {
		t.Fatalf("List() has %d messages, want 3", len(l))
	}
	queued, failed, held := l[0], l[1], l[2]
	if queued.State != StateQueued || queued.Frozen != 90*time.Second || queued.Attempts != 1 ||
		queued.Recipients[0].State != RcptSent || queued.Recipients[1].State != RcptPending ||
		queued.MessageID != "<q1@example.com>" {
		t.Errorf("queued message = %+v", queued)
	}
	if r := queued.Recipients[1]; r.Code != 451 || r.Enhanced != "4.3.0" {
		t.Errorf("old reply %q loaded as code %d enhanced %q", r.Reply, r.Code, r.Enhanced)
	}
	if failed.State != StateFailed || failed.Recipients[0].State != RcptFailed ||
		failed.Recipients[0].Code != 550 || failed.Recipients[0].Enhanced != "5.1.1" {
		t.Errorf("failed message = %+v", failed)
	}
	if !held.AdminHold || held.Account != "sales" {
		t.Errorf("admin-held message = %+v", held)
	}
	if st := q.Stats("sales"); st.Held != 1 {
		t.Errorf("Stats(sales) = %+v: the account hold was lost", st)
	}
	rc, err := q.Message(queued.ID)
	if err != nil {
		t.Fatalf("Message = %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	want, _ := os.ReadFile(filepath.Join("testdata/spool-v1", queued.ID+".msg"))
	if err != nil || len(want) == 0 || !bytes.Equal(got, want) {
		t.Errorf("Message(%s) = %q, %v; want the file as the older relayd wrote it, %q", queued.ID, got, err, want)
	}
	// Its files keep their names: a newer relayd writes ID.spool for new
	// mail only.
	if err := q.Delete(queued.ID); err != nil {
		t.Fatal(err)
	}
	for _, ext := range []string{".msg", ".json"} {
		if _, err := os.Stat(filepath.Join(dir, queued.ID+ext)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("after Delete(%s): %s%s %v", queued.ID, queued.ID, ext, err)
		}
	}
}

// An unknown operation changes nothing (it once fell through to release).
func TestApplyUnknownOp(t *testing.T) {
	dir := copyDir(t, "testdata/spool-v1")
	q, err := Open(Options{Dir: dir, Accounts: func(n string) *auth.Account {
		if n == "sales" {
			return &auth.Account{}
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Apply("relase", "sales"); !errors.Is(err, ErrUnknownOp) {
		t.Errorf("Apply(relase) = %v, want ErrUnknownOp", err)
	}
	if st := q.Stats("sales"); st.Held != 1 {
		t.Errorf("an unknown operation released the account: %+v", st)
	}
	if _, err := q.Apply(OpRelease, "no-such-id"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Apply(release, unknown) = %v, want ErrNotFound", err)
	}
}
