package queue_test

import (
	"bytes"
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	. "github.com/relayd/relayd/queue"
)

// stubTransport is a Transport that is not SMTP: it answers each recipient
// from a table and records what it was handed.
type stubTransport struct {
	mu      sync.Mutex
	openErr error
	answer  map[string]Result
	got     []*Message
	bodies  [][]byte
}

func (s *stubTransport) Open(ctx context.Context, a *auth.Account) (Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.openErr != nil {
		if he := health.AsError(s.openErr); he != nil {
			a.Health.Fail(health.SourceSMTP, he) // as package upstream reports it
		}
		return nil, s.openErr
	}
	return stubConn{s}, nil
}

type stubConn struct{ s *stubTransport }

func (c stubConn) Deliver(ctx context.Context, m *Message) ([]Result, error) {
	r, err := m.Open()
	if err != nil {
		return nil, err
	}
	body, _ := io.ReadAll(r)
	r.Close()
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	c.s.got = append(c.s.got, m)
	c.s.bodies = append(c.s.bodies, body)
	var out []Result
	for _, to := range m.To {
		res, ok := c.s.answer[to]
		if !ok {
			res = Result{State: RcptSent, Reply: "accepted", Code: 250}
		}
		out = append(out, res)
	}
	return out, nil
}

func (stubConn) Reset() error { return nil }
func (stubConn) Close() error { return nil }

// The scheduler hands messages to whatever Transport it is given and keeps
// per-recipient results with their codes: sent recipients are not tried
// again, a temporary one is, a permanent one fails the message and the
// sender gets a DSN through the same transport.
func TestSchedulerWithAnotherTransport(t *testing.T) {
	b := relaytest.New(t)
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: "127.0.0.1:1", Security: "none"}, relaytest.AccountOptions{})
	tr := &stubTransport{answer: map[string]Result{
		"later@example.net":  {State: RcptPending, Reply: "451 4.7.1 try later", Code: 451, Enhanced: "4.7.1"},
		"nobody@example.net": {State: RcptFailed, Reply: "550 5.1.1 no such user", Code: 550, Enhanced: "5.1.1"},
	}}
	events := make(chan Event, 100)
	q := b.Queue(relaytest.Registry(acct), Options{Transport: tr, OnEvent: func(e Event) { events <- e }})
	id, err := q.Submit(&Submission{Account: "support", From: relaytest.Mailbox,
		To:   []string{"ok@example.net", "later@example.net", "nobody@example.net"},
		Body: bytes.NewReader([]byte("Subject: via a stub\r\n\r\nhello\r\n"))})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Await(t, events, "a deferral", 15*time.Second, func(e Event) bool { return e.Kind == EventDeferred && e.ID == id })
	e, err := q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		state    RcptState
		enhanced string
	}{"ok@example.net": {RcptSent, ""}, "later@example.net": {RcptPending, "4.7.1"}, "nobody@example.net": {RcptFailed, "5.1.1"}}
	for _, r := range e.Recipients {
		if w := want[r.Addr]; r.State != w.state || r.Enhanced != w.enhanced {
			t.Errorf("%s: %s %q, want %s %q", r.Addr, r.State, r.Enhanced, w.state, w.enhanced)
		}
	}
	tr.mu.Lock()
	first := tr.got[0]
	body := string(tr.bodies[0])
	tr.mu.Unlock()
	if len(first.To) != 3 || !bytes.Contains([]byte(body), []byte("hello")) || first.From != relaytest.Mailbox {
		t.Errorf("the transport was handed %+v with %q", first, body)
	}
	// The retry goes to the temporary recipient only.
	tr.mu.Lock()
	delete(tr.answer, "later@example.net")
	tr.mu.Unlock()
	q.Flush("support")
	testkit.Await(t, events, "the message failed for its permanent recipient", 15*time.Second, func(e Event) bool { return e.Kind == EventFailed && e.ID == id })
	tr.mu.Lock()
	defer tr.mu.Unlock()
	var retried, dsn *Message
	for _, m := range tr.got[1:] {
		if m.ID == id {
			retried = m
		} else if m.From == relaytest.Mailbox && len(m.To) == 1 && m.To[0] == relaytest.Mailbox {
			dsn = m
		}
	}
	if retried == nil || len(retried.To) != 1 || retried.To[0] != "later@example.net" {
		t.Errorf("retry handed %+v, want the temporary recipient only", retried)
	}
	if dsn == nil {
		t.Error("no DSN was handed to the transport for the failed recipient")
	}
}

// An account condition from the transport holds the account's mail;
// nothing bounces.
func TestSchedulerHoldsOnTransportCondition(t *testing.T) {
	b := relaytest.New(t)
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: "127.0.0.1:1", Security: "none"}, relaytest.AccountOptions{})
	tr := &stubTransport{openErr: &health.Error{State: health.StateNeedsAdmin, Reason: health.ReasonSMTPAuthDisabled, Advice: "enable it"}}
	events := make(chan Event, 100)
	q := b.Queue(relaytest.Registry(acct), Options{Transport: tr, OnEvent: func(e Event) { events <- e }})
	if _, err := q.Submit(&Submission{Account: "support", From: relaytest.Mailbox, To: []string{"x@example.net"},
		Body: bytes.NewReader([]byte("Subject: x\r\n\r\nx\r\n"))}); err != nil {
		t.Fatal(err)
	}
	testkit.Await(t, events, "the hold", 15*time.Second, func(e Event) bool { return e.Kind == EventHeld })
	if st := q.Stats("support"); st.Held != 1 || st.Hold == nil || st.Hold.Reason != health.ReasonSMTPAuthDisabled {
		t.Errorf("stats = %+v, want 1 held for smtp_auth_disabled", st)
	}
}

// Time held before a restart stays out of a message's lifetime after it:
// a message held by a dead grant for 5.5 days, across a restart, that
// meets a temporary failure when the grant is back is retried, not
// bounced for a lifetime of 5 days.
func TestHoldOutlivesARestart(t *testing.T) {
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	pass := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	b := relaytest.New(t)
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: "127.0.0.1:1", Security: "none"}, relaytest.AccountOptions{Now: clock})
	reg := relaytest.Registry(acct)
	dead := &stubTransport{openErr: &health.Error{State: health.StateNeedsReauth, Reason: health.ReasonGrantRevoked, Advice: "run relayd authorize support"}}
	dir := b.Dir + "/restarted"
	open := func(tr Transport, events chan Event) (*Queue, func()) {
		q, err := Open(Options{Dir: dir, Accounts: reg.Auth, Transport: tr, Now: clock, Lifetime: 5 * 24 * time.Hour,
			RetryMin: time.Hour, Logger: b.Log, OnEvent: func(e Event) { events <- e }})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { q.Run(ctx); close(done) }()
		return q, func() { cancel(); <-done; q.Close() }
	}
	events := make(chan Event, 100)
	q, stop := open(dead, events)
	id, err := q.Submit(&Submission{Account: "support", From: relaytest.Mailbox, To: []string{"x@example.net"},
		Body: bytes.NewReader([]byte("Subject: held across a restart\r\n\r\nx\r\n"))})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Await(t, events, "the hold", 15*time.Second, func(e Event) bool { return e.Kind == EventHeld })
	stop()

	pass(5*24*time.Hour + 12*time.Hour) // relayd was down, or restarted, meanwhile
	acct.Health.Reset()                 // a new process: the condition is new...
	acct.Health.ReviewHold(false)
	acct.Health.Fail(health.SourceToken, &health.Error{State: health.StateNeedsReauth, Reason: health.ReasonGrantRevoked})
	events = make(chan Event, 100)
	good := &stubTransport{answer: map[string]Result{"x@example.net": {State: RcptPending, Reply: "451 4.3.2 try later", Code: 451, Enhanced: "4.3.2"}}}
	q, stop = open(good, events)
	defer stop()
	testkit.Await(t, events, "the hold after the restart", 15*time.Second, func(e Event) bool { return e.Kind == EventHeld })
	acct.Health.Reset() // ...until a new grant comes
	e := testkit.Await(t, events, "the attempt", 15*time.Second, func(e Event) bool {
		return e.ID == id && (e.Kind == EventDeferred || e.Kind == EventFailed)
	})
	if e.Kind != EventDeferred {
		t.Errorf("the message %s after 5.5 days held across a restart and a 451, want deferred (held time is not lifetime)", e.Kind)
	}
}
