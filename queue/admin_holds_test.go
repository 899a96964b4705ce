package queue_test

import (
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
	. "github.com/relayd/relayd/queue"
)

// A held account's mail is shown "held" by List and Get alike; flush,
// retry and release say what still holds it and what releases it,
// rather than that it goes out now.
func TestAdminOperationsOnHeldAccount(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{retryMin: time.Hour})
	r.idp.Revoke(mailbox)
	if err := r.submit(mailbox, []string{"held1@example.net"}, []byte("Subject: held\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(EventHeld)
	l := r.q.List()
	if len(l) != 1 || l[0].State != StateHeld {
		t.Fatalf("List() = %+v, want one held message", l)
	}
	id := l[0].ID
	if e, err := r.q.Get(id); err != nil || e.State != StateHeld {
		t.Errorf("Get(%s) = %+v, %v; want the state List shows, held", id, e, err)
	}
	if n := r.q.Flush("support"); n != 0 {
		t.Errorf("Flush(support) = %d, want 0 (nothing of a held account goes now)", n)
	}
	for _, target := range []string{"support", "", id} {
		hs := r.q.Holds(target)
		if len(hs) != 1 || hs[0].Account != "support" || hs[0].State != health.StateNeedsReauth ||
			!strings.Contains(hs[0].Release, "relayd authorize support") || hs[0].Reason == "" {
			t.Errorf("Holds(%q) = %+v, want support's hold, released by relayd authorize support", target, hs)
		}
	}
	if err := r.q.Retry(id); err != nil {
		t.Fatal(err)
	}
	if e, _ := r.q.Get(id); e.State != StateHeld {
		t.Errorf("after Retry the message is %s, want still held", e.State)
	}
	// Releasing the account clears no token condition: still held.
	if _, err := r.q.Release("support"); err != nil {
		t.Fatal(err)
	}
	if hs := r.q.Holds("support"); len(hs) != 1 || hs[0].State != health.StateNeedsReauth {
		t.Errorf("Holds after Release = %+v, want the grant's hold", hs)
	}

	// An admin's hold of one message says so, and what releases it.
	if _, err := r.q.Hold(id); err != nil {
		t.Fatal(err)
	}
	hs := r.q.Holds(id)
	if len(hs) != 2 || hs[0].ID != id || hs[0].Reason != health.ReasonAdminHold || hs[0].Release != "relayd queue release "+id {
		t.Errorf("Holds(%s) with the message held = %+v", id, hs)
	}
	if s := hs[0].String(); !strings.Contains(s, id+` (account "support") is held`) || !strings.Contains(s, "Released by: relayd queue release "+id) {
		t.Errorf("Hold.String() = %q", s)
	}
}
