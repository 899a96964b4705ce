package proxy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/queue"
)

// The spool directory is deleted under the running relay (an admin's
// rm -rf): relayd never answers 250 for mail it cannot keep — each
// submission gets 452 4.3.1 —, the log says the directory was deleted and
// that a restart makes it again, and it does: the spool opened again on
// the same path takes mail.
func TestSMTPSpoolDirectoryDeleted(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{upDown: true, retryMin: time.Hour})
	c := r.client()
	if err := r.send(c, smtpSender, []string{"x@example.net"}, []byte("Subject: before\r\n\r\nbefore\r\n")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(r.dir, "queue")
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		err := r.send(c, smtpSender, []string{"x@example.net"}, []byte("Subject: after\r\n\r\nafter\r\n"))
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
			t.Fatalf("send with the spool deleted = %v, want 452 4.3.1", err)
		}
	}
	if l := r.logs.String(); !strings.Contains(l, "was deleted while relayd runs; restart relayd to make it again") {
		t.Errorf("the log does not say the spool was deleted:\n%s", l)
	}
	// What a restart does first.
	sp, err := queue.OpenSpool(dir, nil)
	if err != nil {
		t.Fatalf("OpenSpool() after the deletion = %v", err)
	}
	defer sp.Close()
	e := &queue.Entry{ID: "after-restart", Account: "support", State: queue.StateQueued}
	if err := sp.Put(e, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatalf("Put() after the spool was made again = %v", err)
	}
}
