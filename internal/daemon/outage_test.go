package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

// An IMAP upstream that cannot be reached makes the account degraded with
// reason imap_unreachable, naming the address, in status and in metrics;
// the next session that reaches the upstream makes it ok again.
func TestIMAPOutageThroughTheListener(t *testing.T) {
	// No warm connection: one dialed before the upstream went down would
	// still be open (a fake taken down keeps its sessions) and serve the
	// login; this test is about dialing a server that is down.
	noWarm := 0
	td := startDaemon(t, func(c *testkit.Config, _ *Options) { c.Accounts[0].WarmConnections = &noWarm })
	addr := td.imapUp.Addr
	td.imapUp.SetDown(true)
	err := td.imapLogin()
	if err == nil || !strings.Contains(err.Error(), "UNAVAILABLE") {
		t.Fatalf("login with the upstream down = %v, want NO [UNAVAILABLE]", err)
	}
	st := td.d.Status()
	a := st.Accounts[0]
	if a.State != health.StateDegraded || a.Reason != health.ReasonIMAPUnreachable || !strings.Contains(a.Advice, addr) {
		t.Errorf("status during the outage: %s %s %q; want degraded, imap_unreachable, naming %s", a.State, a.Reason, a.Advice, addr)
	}
	if !strings.Contains(st.Banner, "degraded (retrying): support") {
		t.Errorf("banner = %q", st.Banner)
	}
	m := td.scrape()
	if v := metricValue(m, `relayd_account_state{account="support",state="degraded"}`); v != 1 {
		t.Errorf(`relayd_account_state{state="degraded"} = %v, want 1`, v)
	}
	if v := metricValue(m, `relayd_upstream_auth_failures_total{account="support",reason="imap_unreachable",source="imap"}`); v < 1 {
		t.Errorf("upstream failures by reason imap_unreachable = %v, want counted", v)
	}

	td.imapUp.SetDown(false)
	if err := td.imapLogin(); err != nil {
		t.Fatalf("login with the upstream back = %v", err)
	}
	if a := td.d.Status().Accounts[0]; a.State != health.StateOK {
		t.Errorf("after a session reached the upstream: %s (%s), want ok", a.State, a.Reason)
	}
}

// An SMTP upstream still unreachable past the retry window turns the
// account disconnected: monitoring goes CRITICAL, and the mail is still
// deferred, not held; the server's return makes it ok and sends the mail.
func TestSMTPOutageTurnsDisconnected(t *testing.T) {
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Health = []string{`retry_window = "150ms"`}
	})
	td.smtpUp.SetDown(true)
	if err := td.send("x@example.net", "sent after the outage"); err != nil {
		t.Fatal(err)
	}
	h := td.d.accounts.Get("support").Health
	for changed := h.Changed(); h.State() != health.StateDisconnected; changed = h.Changed() {
		testkit.Await(t, mapChan(changed), "disconnected", 20*time.Second, func(struct{}) bool { return true })
	}
	st := td.d.Status()
	a := st.Accounts[0]
	if a.Reason != health.ReasonSMTPUnreachable || !a.NeedsAttention() || !a.HeldSince.IsZero() || a.Queue.Held != 0 || a.Queue.Queued != 1 {
		t.Errorf("disconnected: reason %s, needs attention %v, held since %v, queue %+v; want smtp_unreachable, CRITICAL, deferred not held",
			a.Reason, a.NeedsAttention(), a.HeldSince, a.Queue)
	}
	if !strings.Contains(st.Banner, "disconnected (relayd keeps trying): support") {
		t.Errorf("banner = %q", st.Banner)
	}
	td.smtpUp.SetDown(false)
	td.waitEvent(queue.EventDelivered)
	if !td.delivered("sent after the outage") {
		t.Error("the message did not reach the upstream once it was back")
	}
	if st := h.State(); st != health.StateOK {
		t.Errorf("after the upstream returned: %s", st)
	}
}
