package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"
)

// A spool that cannot store mail (here its directory deleted under the
// daemon; a full or read-only disk is counted the same way) shows where
// an admin looks without reading the log: each submission answered 452 is
// counted in relayd_submissions_not_queued_total, which the alert
// RelaydSpoolCannotStoreMail watches.
func TestSpoolFailureCounted(t *testing.T) {
	td := startDaemon(t)
	if err := os.RemoveAll(filepath.Join(td.d.config().StateDir, "queue")); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		err := td.send("someone@example.net", "not stored")
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 452 {
			t.Fatalf("submission with the spool deleted = %v, want 452", err)
		}
	}
	m := td.scrape()
	if v := metricValue(m, `relayd_submissions_not_queued_total{account="support"}`); v != 2 {
		t.Errorf("relayd_submissions_not_queued_total = %v, want 2\n%s", v, grepLines(m, "not_queued"))
	}
	// And in relayd status: its banner, its JSON, and (cmd/relayd) a
	// CRITICAL exit.
	st := td.d.Status()
	if f := st.SpoolFailing; f == nil || f.Refused != 2 || !strings.Contains(f.LastError, "deleted") ||
		!strings.Contains(st.Banner, "the spool cannot store mail (2 submissions refused") {
		t.Errorf("status: spool_failing %+v, banner %q", st.SpoolFailing, st.Banner)
	}
}

func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
