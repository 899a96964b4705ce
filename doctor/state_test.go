package doctor_test

import (
	"testing"

	"github.com/relayd/relayd/doctor"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// A login doctor makes that the upstream refuses (a fresh token refused:
// the mailbox is not on this server) leaves the account's own condition
// alone: doctor never holds or releases its mail.
func TestDoctorLoginLeavesTheAccountsState(t *testing.T) {
	f := newFixture(t)
	acct := f.account(nil)
	up := f.e.IMAPUpstream(testkit.IMAPOptions{Style: testkit.Exchange})
	acct.Config.IMAPServer = up.Addr // knows no mailbox: refuses every token
	before := acct.Health.State()
	rs := run(t, acct, doctor.Options{})
	if r := find(t, rs, "login.imap"); r.OK {
		t.Fatalf("the refusing server's login passed: %+v", r)
	}
	for _, src := range []health.Source{health.SourceIMAP, health.SourceToken} {
		if c := acct.Health.Condition(src); c != nil {
			t.Errorf("doctor's IMAP login changed the account's %s condition: %s %s (state %s -> %s)", src, c.State, c.Reason, before, acct.Health.State())
		}
	}
}
