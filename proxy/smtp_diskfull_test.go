package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/queue"
)

// fullFS is a spool file system whose disk fills up on demand: once full
// holds "message" (a new message file's message), "metadata" (a new
// message file's metadata) or ".json." (a temporary file for a metadata
// update), those writes store half their bytes and fail with ENOSPC, as a
// real full disk does.
type fullFS struct {
	queue.FS
	full atomic.Value // string
}

func (f *fullFS) wrap(real queue.FS) queue.FS {
	f.FS = real
	f.full.Store("")
	return f
}

func (f *fullFS) Create(name string) (queue.File, error) {
	fl, err := f.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return &fullFile{File: fl, fs: f, prefix: name}, nil
}

func (f *fullFS) CreateTemp(prefix string) (queue.File, error) {
	fl, err := f.FS.CreateTemp(prefix)
	if err != nil {
		return nil, err
	}
	return &fullFile{File: fl, fs: f, prefix: prefix}, nil
}

type fullFile struct {
	queue.File
	fs     *fullFS
	prefix string
}

func (w *fullFile) Write(b []byte) (int, error) {
	if w.full(b) {
		n, _ := w.File.Write(b[:len(b)/2])
		return n, &os.PathError{Op: "write", Path: w.Name(), Err: syscall.ENOSPC}
	}
	return w.File.Write(b)
}

// full reports whether writing b runs out of space.
func (w *fullFile) full(b []byte) bool {
	switch part := w.fs.full.Load().(string); {
	case part == "":
		return false
	case strings.HasSuffix(w.prefix, ".spool"): // header line, message, metadata
		if bytes.HasPrefix(b, []byte("relayd-spool ")) {
			return false
		}
		meta := bytes.HasPrefix(b, []byte(`{"id":`))
		return part == "metadata" && meta || part == "message" && !meta
	default:
		return strings.Contains(w.prefix, part)
	}
}

// The disk fills up during DATA, then during the metadata write that
// follows it, then during an update of a queued message's metadata: each
// submission is answered 452 4.3.1 and leaves nothing behind, the update
// fails and leaves the old metadata whole, every message that got a 250
// before is intact, and once there is space again submissions get 250
// without a restart.
func TestSMTPDiskFull(t *testing.T) {
	fs := &fullFS{}
	r := newSMTPRelay(t, smtpRelayOpts{upDown: true, retryMin: time.Hour, wrapFS: fs.wrap})
	c := r.client()
	queueDir := filepath.Join(r.dir, "queue")
	body := func(i int) []byte { return []byte(fmt.Sprintf("Subject: m%d\r\n\r\nbody %d\r\n", i, i)) }
	acked := map[string]int{} // queue ID → message number
	send := func(i int) error {
		before := map[string]bool{}
		for _, e := range r.q.List() {
			before[e.ID] = true
		}
		if err := r.send(c, smtpSender, []string{"x@example.net"}, body(i)); err != nil {
			return err
		}
		for _, e := range r.q.List() {
			if !before[e.ID] {
				acked[e.ID] = i
			}
		}
		return nil
	}
	for i := range 3 {
		if err := send(i); err != nil {
			t.Fatalf("message %d with space on the disk: %v", i, err)
		}
	}
	file := func(id string) []byte {
		b, err := os.ReadFile(filepath.Join(queueDir, id+".spool"))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	var someID string
	for id := range acked {
		someID = id
	}

	for _, part := range []string{"message", "metadata"} {
		fs.full.Store(part)
		err := send(100)
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
			t.Fatalf("send with the disk full at %q = %v, want 452 4.3.1", part, err)
		}
	}
	// A metadata update (here an admin's hold) on a full disk fails as a
	// whole: the old metadata stays on disk, and the hold is not applied.
	fs.full.Store(".json.")
	stored := file(someID)
	if _, err := r.q.Hold(someID); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("Hold() with the disk full = %v, want ENOSPC", err)
	}
	if _, err := os.Stat(filepath.Join(queueDir, someID+".json")); !errors.Is(err, os.ErrNotExist) || !bytes.Equal(file(someID), stored) {
		t.Errorf("after a failed update: %s.json %v, message file changed %v; want the metadata Put stored, alone", someID, err, !bytes.Equal(file(someID), stored))
	}
	if e, err := r.q.Get(someID); err != nil || e.AdminHold {
		t.Errorf("Get() after a failed hold = %+v, %v; want the message not held", e, err)
	}
	before, _ := r.q.Get(someID)
	if err := r.q.Retry(someID); err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Errorf("Retry() with the disk full = %v, want ENOSPC", err)
	}
	if e, err := r.q.Get(someID); err != nil || !e.NextAttempt.Equal(before.NextAttempt) {
		t.Errorf("Get() after a failed retry = %+v, %v; want the message as it was (next attempt %s)", e, err, before.NextAttempt)
	}

	// The queue says the spool is failing (relayd status shows it)...
	if f := r.q.StoreFailing(); f == nil || f.Refused != 2 || !strings.Contains(f.LastError, "no space left") {
		t.Errorf("StoreFailing() with the disk full = %+v, want 2 refused with ENOSPC", f)
	}
	fs.full.Store("")
	if err := send(3); err != nil {
		t.Fatalf("message after space came back: %v", err)
	}
	// ...until a submission is stored again.
	if f := r.q.StoreFailing(); f != nil {
		t.Errorf("StoreFailing() after a stored message = %+v, want nil", f)
	}

	// On disk: each acknowledged message whole, with metadata that parses,
	// and nothing else.
	if len(acked) != 4 {
		t.Fatalf("%d messages acknowledged, want 4", len(acked))
	}
	names, _ := filepath.Glob(filepath.Join(queueDir, "*"))
	want := 3 + len(acked) // lock, recovered-boot.list, tmp/, and a file per message
	if len(names) != want {
		t.Errorf("spool holds %v, want %d entries", names, want)
	}
	if tmp, _ := os.ReadDir(filepath.Join(queueDir, "tmp")); len(tmp) != 0 {
		t.Errorf("half-written files left in tmp/: %v", tmp)
	}
	sp, err := queue.OpenSpool(queueDir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	entries, err := sp.Recover()
	if err != nil || len(entries) != len(acked) {
		t.Fatalf("Recover() = %d entries, %v; want the %d acknowledged", len(entries), err, len(acked))
	}
	for _, e := range entries {
		i, ok := acked[e.ID]
		f, err := sp.Open(e.ID)
		if !ok || err != nil {
			t.Errorf("entry %s: acknowledged %v, %v", e.ID, ok, err)
			continue
		}
		msg, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.HasSuffix(msg, body(i)) || e.Size != int64(len(msg)) {
			t.Errorf("message %d (%s) = %q, %v; size %d, want it to end in %q", i, e.ID, msg, err, e.Size, body(i))
		}
	}
}
