package queue_test

import (
	"bytes"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	. "github.com/relayd/relayd/queue"
)

// The wall clock jumps while relayd runs (an NTP step, a VM restored from
// a snapshot, an admin's date -s). Every deadline the running queue keeps
// is a time.Time read from its clock (time.Now by default), which carries
// Go's monotonic reading, and Go compares two such times by that reading
// alone: a wall-clock step cannot move a retry, a probe or a lifetime.
// This test checks that the queue's deadlines keep their monotonic
// reading (nothing strips it on the way: a clone, a conversion to UTC);
// the jump itself cannot be injected into time.Now, and an injected clock
// whose wall and monotonic readings move apart cannot be built in Go, so
// TestClockJumpForwardAnHour gives the worse case, a clock where both
// jump.
func TestQueueDeadlinesAreMonotonic(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{})
	r.up.FailData(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"})
	if err := r.submit(mailbox, []string{"x@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(EventDeferred)
	e := r.q.List()[0]
	for what, v := range map[string]time.Time{"Created": e.Created, "NextAttempt": e.NextAttempt, "LastAttempt": e.LastAttempt} {
		if !strings.Contains(v.String(), " m=") {
			t.Errorf("%s = %s has no monotonic reading: a wall-clock jump would move it", what, v)
		}
	}
}

// A clock that jumps an hour forward while messages wait for their retry
// (the worst case of a wall-clock step: here the monotonic reading jumps
// too, as if relayd had been stopped for an hour): each message is tried
// once more, not once per retry it missed; none expires (its lifetime, 2 h,
// is not over); each reaches the upstream once.
func TestClockJumpForwardAnHour(t *testing.T) {
	var off atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(off.Load())) }
	b := relaytest.New(t)
	up := b.SMTPUpstream(testkit.SMTPOptions{})
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: up.Addr, Security: "none"}, relaytest.AccountOptions{})
	events := make(chan Event, 1000)
	q := b.Queue(relaytest.Registry(acct), Options{Now: now, RetryMin: 200 * time.Millisecond, Lifetime: 2 * time.Hour,
		OnEvent: func(e Event) { events <- e }})
	up.FailData(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"})
	const n = 5
	for i := range n {
		if _, err := q.Submit(&Submission{Account: "support", From: mailbox, To: []string{"x@example.net"},
			Body: bytes.NewReader([]byte("Subject: m" + string(rune('0'+i)) + "\r\n\r\nx\r\n"))}); err != nil {
			t.Fatal(err)
		}
	}
	for range n {
		testkit.Await(t, events, "first deferral", 15*time.Second, func(e Event) bool { return e.Kind == EventDeferred })
	}
	up.FailData(nil)
	off.Store(int64(time.Hour))
	delivered := 0
	for delivered < n {
		e := testkit.Await(t, events, "delivery after the jump", 15*time.Second, func(e Event) bool {
			return e.Kind == EventDelivered || e.Kind == EventFailed || e.Kind == EventDeferred
		})
		if e.Kind != EventDelivered {
			t.Fatalf("after the jump: %s %s, want every message delivered", e.Kind, e.ID)
		}
		delivered++
	}
	if got := len(up.Messages()); got != n {
		t.Errorf("the upstream has %d messages, want %d", got, n)
	}
}

// A message whose next attempt is stored an hour or more ahead (the clock
// went back an hour while relayd was stopped, or was an hour fast when the
// retry was written) is not left waiting for that hour after a restart:
// no stored retry is further away than retry_max.
func TestRecoveredRetryNotBeyondRetryMax(t *testing.T) {
	b := relaytest.New(t)
	up := b.SMTPUpstream(testkit.SMTPOptions{})
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: up.Addr, Security: "none"}, relaytest.AccountOptions{})
	dir := filepath.Join(b.Dir, "queue")
	sp, err := OpenSpool(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	e := &Entry{ID: "20261130T120000000000-0123456789", Account: "support", From: mailbox, Created: now.Add(-time.Minute),
		State: StateQueued, NextAttempt: now.Add(time.Hour + time.Minute), Attempts: 3, MessageID: "<clock@test>",
		Recipients: []Recipient{{Addr: "x@example.net", State: RcptPending}}}
	if err := sp.Put(e, strings.NewReader("Message-ID: <clock@test>\r\nSubject: clock\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	sp.Close()
	events := make(chan Event, 100)
	b.Queue(relaytest.Registry(acct), Options{RetryMin: 100 * time.Millisecond, RetryMax: 400 * time.Millisecond,
		OnEvent: func(e Event) { events <- e }})
	testkit.Await(t, events, "delivery of the recovered message", 15*time.Second, func(e Event) bool { return e.Kind == EventDelivered })
	if got := len(up.Messages()); got != 1 {
		t.Errorf("the upstream has %d messages, want 1", got)
	}
}
