package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/queue"
)

// removeFailFS refuses to remove spool files while failing is set (a
// directory turned read-only: EROFS), and says when a removal failed and
// when a message file was removed.
type removeFailFS struct {
	queue.FS
	failing         atomic.Bool
	failed, removed chan string
}

func (f *removeFailFS) wrap(real queue.FS) queue.FS { f.FS = real; return f }

func (f *removeFailFS) Remove(name string) error {
	if f.failing.Load() {
		select {
		case f.failed <- name:
		default:
		}
		return &os.PathError{Op: "unlinkat", Path: name, Err: syscall.EROFS}
	}
	err := f.FS.Remove(name)
	if err == nil && strings.HasSuffix(name, ".spool") {
		f.removed <- name
	}
	return err
}

// A message delivered while the spool cannot remove files (the state
// directory turned read-only after the 250) stays on disk; relayd keeps
// trying to remove it and does once it can, so a later restart does not
// send it again. Bug found and fixed: relayd logged 'it may be sent again'
// and never tried again, and the next start sent it a second time.
func TestSMTPDeliveredButNotRemoved(t *testing.T) {
	fs := &removeFailFS{failed: make(chan string, 1), removed: make(chan string, 10)}
	fs.failing.Store(true)
	r := newSMTPRelay(t, smtpRelayOpts{wrapFS: fs.wrap})
	c := r.client()
	if err := r.send(c, smtpSender, []string{"x@example.net"}, []byte("Subject: once\r\n\r\nonce\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitMessages(1)
	select {
	case <-fs.failed:
	case <-time.After(15 * time.Second):
		t.Fatal("the delivered message's removal was never tried")
	}
	fs.failing.Store(false)
	select {
	case <-fs.removed:
	case <-time.After(15 * time.Second):
		t.Fatalf("the delivered message was never removed once the spool allowed it:\n%s", r.logs.String())
	}
	var left []string
	for _, pattern := range []string{"*.spool", "*.msg", "*.json"} {
		l, _ := filepath.Glob(filepath.Join(r.dir, "queue", pattern))
		left = append(left, l...)
	}
	if len(left) != 0 {
		t.Errorf("the spool still holds %v: the next start would send it again", left)
	}
	// What the next start does.
	sp, err := queue.OpenSpool(filepath.Join(r.dir, "queue"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	if es, err := sp.Recover(); err != nil || len(es) != 0 {
		t.Errorf("Recover() = %d entries, %v; want none", len(es), err)
	}
}
