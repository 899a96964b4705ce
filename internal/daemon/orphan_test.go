package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

// Mail of an account that a reload removed stays on disk and held, and
// stays in view: status (JSON and banner) and metrics count it, and the
// queue commands act on it by the account's name.
func TestRemovedAccountMailStaysInView(t *testing.T) {
	td, all, reload := startTwoAccounts(t)
	q := td.d.Queue()
	if _, err := q.Hold("support"); err != nil {
		t.Fatal(err)
	}
	if err := td.send("to@example.net", "kept for later"); err != nil {
		t.Fatal(err)
	}
	td.waitEvent(queue.EventQueued)

	reload(all[1:])

	st := td.d.Status()
	if st.Orphaned != 1 || len(st.OrphanedAccounts) != 1 || st.OrphanedAccounts[0].Account != "support" ||
		st.OrphanedAccounts[0].Held != 1 {
		t.Fatalf("status orphaned = %d, %+v; want 1 held message of support", st.Orphaned, st.OrphanedAccounts)
	}
	if !strings.Contains(st.Banner, "1 message of removed account kept, held: support") {
		t.Errorf("banner = %q, want it to name the removed account's mail", st.Banner)
	}
	if v := metricValue(td.scrape(), `relayd_queue_orphaned_messages{account="support"}`); v != 1 {
		t.Errorf("relayd_queue_orphaned_messages{account=support} = %v, want 1", v)
	}

	if _, err := q.Release("support"); err != nil {
		t.Errorf("queue release support (removed account) = %v, want it to act on its mail", err)
	}
	if _, err := q.Apply(queue.OpFlush, "support"); err != nil {
		t.Errorf("queue flush support = %v", err)
	}
	if err := q.Delete("support"); err != nil {
		t.Fatalf("queue delete support = %v, want its mail deleted", err)
	}
	if st := td.d.Status(); st.Orphaned != 0 || len(q.List()) != 0 {
		t.Errorf("after queue delete support: orphaned %d, queue %d message(s); want none", st.Orphaned, len(q.List()))
	}
	if err := q.Delete("support"); !errors.Is(err, queue.ErrNotFound) {
		t.Errorf("queue delete support again = %v, want ErrNotFound", err)
	}
}

// Mail kept for a removed account goes out as soon as a reload adds the
// account back, not at the next hourly look.
func TestReaddedAccountSendsItsMail(t *testing.T) {
	td, all, reload := startTwoAccounts(t)
	q := td.d.Queue()
	if _, err := q.Hold("support"); err != nil { // keep the message until support is gone
		t.Fatal(err)
	}
	if err := td.send("to@example.net", "kept while support was away"); err != nil {
		t.Fatal(err)
	}
	td.waitEvent(queue.EventQueued)
	reload(all[1:])
	if _, err := q.Release("support"); err != nil {
		t.Fatal(err)
	}
	td.waitEvent(queue.EventHeld) // held as not configured
	reload(all)
	td.waitEvent(queue.EventDelivered)
	if !td.delivered("kept while support was away") {
		t.Error("the kept message did not reach the upstream")
	}
}

// startTwoAccounts starts a daemon with accounts "support" and "other"
// (both of its configuration's accounts are in all) and returns a reload
// that keeps only the given accounts.
func startTwoAccounts(t *testing.T) (td *testDaemon, all []testkit.Account, reload func([]testkit.Account)) {
	t.Helper()
	var tc *testkit.Config
	cfgPath := filepath.Join(t.TempDir(), "relayd.toml")
	td = startDaemon(t, func(c *testkit.Config, o *Options) {
		other := c.Accounts[0]
		other.Name, other.Email, other.LocalUser = "other", "other@example.com", "other-user"
		c.Accounts = append(c.Accounts, other)
		o.ConfigPath = cfgPath
		tc = c
	})
	// The listeners' addresses are fixed for the reloads.
	tc.IMAPListen, tc.SMTPListen = td.d.IMAPAddrs(), td.d.SMTPAddrs()
	return td, tc.Accounts, func(accounts []testkit.Account) {
		t.Helper()
		tc.Accounts = accounts
		if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := td.d.Reload(); err != nil {
			t.Fatal(err)
		}
	}
}
