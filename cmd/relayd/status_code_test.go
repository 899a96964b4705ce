package main

import (
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/status"
)

func TestNagiosCode(t *testing.T) {
	ok := status.Account{Name: "a"}
	ok.State = health.StateOK
	degraded := status.Account{Name: "b"}
	degraded.State = health.StateDegraded
	reauth := status.Account{Name: "c"}
	reauth.State = health.StateNeedsReauth
	orphaned := &status.Status{Accounts: []status.Account{ok}}
	orphaned.SetOrphans([]queue.Orphan{{Account: "gone", AccountStats: queue.AccountStats{Held: 2}}})
	for _, tc := range []struct {
		name string
		st   *status.Status
		want int
	}{
		{"all ok", &status.Status{Accounts: []status.Account{ok}}, nagiosOK},
		{"degraded", &status.Status{Accounts: []status.Account{ok, degraded}}, nagiosWarning},
		{"needs reauthorization", &status.Status{Accounts: []status.Account{degraded, reauth}}, nagiosCritical},
		{"mail of a removed account", orphaned, nagiosWarning},
	} {
		if got := nagiosCode(tc.st); got != tc.want {
			t.Errorf("%s: exit %d, want %d", tc.name, got, tc.want)
		}
	}
}

// A spool that cannot store mail makes relayd status CRITICAL, whatever
// the mailboxes.
func TestNagiosCodeSpoolFailing(t *testing.T) {
	st := &status.Status{Accounts: []status.Account{{Name: "ok"}}}
	st.Accounts[0].State = health.StateOK
	if c := nagiosCode(st); c != nagiosOK {
		t.Fatalf("all ok: %d", c)
	}
	st.SetSpoolFailing(&queue.StoreFailure{Since: time.Now(), Refused: 3, LastError: "no space left on device"})
	if c := nagiosCode(st); c != nagiosCritical {
		t.Errorf("spool failing: %d, want CRITICAL", c)
	}
	if !strings.Contains(st.Banner, "the spool cannot store mail (3 submissions refused") {
		t.Errorf("banner %q", st.Banner)
	}
}
