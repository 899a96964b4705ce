package queue_test

import (
	"bytes"
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	. "github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/registry"
	smtptransport "github.com/relayd/relayd/transport/smtp"
)

const backupBox = "backup@example.com"

// fallbackEnv is account "support" (support@example.com, its own fake
// upstream) with fallback account "backup" (backup@example.com, another
// fake upstream), on a fake clock.
type fallbackEnv struct {
	t        *testing.T
	b        *relaytest.Env
	upA, upB *testkit.SMTPUpstream
	graph    *testkit.Graph
	a, fb    *registry.Account
	reg      *registry.Registry
	q        *Queue
	events   chan Event

	mu  sync.Mutex
	now time.Time
}

type fallbackOpts struct {
	mode      string        // fallback_from
	after     time.Duration // fallback_after
	realClock bool
	aDown     bool // support's upstream cannot be reached
	noQueue   bool // the test opens the queue itself
	graph     bool // backup sends through (fake) Microsoft Graph
}

func newFallbackEnv(t *testing.T, o fallbackOpts) *fallbackEnv {
	t.Helper()
	f := &fallbackEnv{t: t, b: relaytest.New(t), now: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC), events: make(chan Event, 1000)}
	clock := f.clock
	if o.realClock {
		clock = nil
	}
	f.upB = f.b.SMTPUpstream(testkit.SMTPOptions{})
	upAAddr := f.b.DeadAddr()
	if !o.aDown {
		f.upA = f.b.SMTPUpstream(testkit.SMTPOptions{})
		upAAddr = f.upA.Addr
	}
	f.a = f.b.Account(testkit.Account{Direction: "outgoing", SMTPServer: upAAddr, Security: "none"},
		relaytest.AccountOptions{Now: clock, Edit: func(c *config.Account) {
			c.FallbackAccount, c.FallbackAfter, c.FallbackFrom = "backup", o.after, o.mode
		}})
	fbAcct := testkit.Account{Name: "backup", Email: backupBox, Direction: "outgoing", SMTPServer: f.upB.Addr, Security: "none"}
	if o.graph {
		f.graph = testkit.StartGraph(t, f.b.IdP)
		fbAcct.Transport, fbAcct.GraphURL = "graph", f.graph.URL
	}
	f.fb = f.b.Account(fbAcct, relaytest.AccountOptions{Now: clock})
	f.reg = relaytest.Registry(f.a, f.fb)
	if !o.noQueue {
		f.q = f.b.Queue(f.reg, f.opts(clock))
	}
	return f
}

func (f *fallbackEnv) opts(clock func() time.Time) Options {
	return Options{Now: clock, RetryMin: time.Hour, Logger: f.b.Log, OnEvent: func(e Event) { f.events <- e }}
}

func (f *fallbackEnv) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// pass moves the fake clock on.
func (f *fallbackEnv) pass(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func (f *fallbackEnv) submit(q *Queue, msg string, to ...string) string {
	f.t.Helper()
	id, err := q.Submit(&Submission{Account: "support", From: relaytest.Mailbox, To: to, Body: strings.NewReader(msg)})
	if err != nil {
		f.t.Fatal(err)
	}
	return id
}

func (f *fallbackEnv) await(what string, match func(Event) bool) Event {
	f.t.Helper()
	return testkit.Await(f.t, f.events, what, 15*time.Second, match)
}

// reauthorize hands support a new grant, as relayd authorize does.
func (f *fallbackEnv) reauthorize() {
	f.t.Helper()
	g, err := auth.ImportRefreshToken(context.Background(), f.a.Config, nil, f.b.IdP.IssueRefreshToken("client", relaytest.Mailbox))
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.a.Tokens.Install(g); err != nil {
		f.t.Fatal(err)
	}
}

const ticket = "From: Support Desk <support@example.com>\r\n" +
	"To: customer@example.net\r\n" +
	"Subject: ticket 42\r\n" +
	"Message-ID: <t42@example.com>\r\n" +
	"\r\n" +
	"Dear customer,\r\n" +
	".a line with a leading dot\r\n" +
	"\r\n" +
	"From here on, the body is not a header.\r\n"

// ticketBody is ticket after its header.
var ticketBody = ticket[strings.Index(ticket, "\r\n\r\n")+4:]

// A revoked account's mail is held; once fallback_after has passed on the
// clock it goes out through the fallback account, rewritten: From names
// the fallback's mailbox with the sender's display name, Reply-To the
// sender, MAIL FROM the fallback; the body byte for byte. The account
// stays needs_reauth; the send is counted and logged.
func TestFallbackRewrite(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackRewrite, after: 15 * time.Minute})
	t0 := f.clock()
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(f.q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })

	st := f.q.Stats("support")
	if fb := st.Fallback; fb == nil || fb.Account != "backup" || fb.Mode != "rewrite" || fb.Active || !fb.Starts.Equal(t0.Add(15*time.Minute)) {
		t.Fatalf("fallback before fallback_after = %+v; want backup, rewrite, not active, starting at %s", st.Fallback, t0.Add(15*time.Minute))
	}
	f.pass(15 * time.Minute)
	f.q.Flush("support") // the worker's timer runs on the real clock
	f.await("delivery through the fallback", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id && e.Via == "backup" })

	got := f.upB.Messages()
	if len(got) != 1 {
		t.Fatalf("the fallback's upstream got %d messages, want 1", len(got))
	}
	m := got[0]
	want := "From: \"Support Desk\" <backup@example.com>\r\n" +
		"Reply-To: Support Desk <support@example.com>\r\n" +
		"To: customer@example.net\r\n" +
		"Subject: ticket 42\r\n" +
		"Message-ID: <t42@example.com>\r\n" +
		"\r\n" + ticketBody
	if m.From != backupBox || len(m.To) != 1 || m.To[0] != "customer@example.net" || string(m.Data) != want {
		t.Errorf("sent MAIL FROM %s to %v:\n%q\nwant MAIL FROM %s:\n%q", m.From, m.To, m.Data, backupBox, want)
	}
	if n := len(f.upA.Messages()); n != 0 {
		t.Errorf("the held account's own upstream got %d messages", n)
	}
	st = f.q.Stats("support")
	if st.SentViaFallback != 1 || st.Fallback == nil || !st.Fallback.Active || st.Fallback.ForcedRewrite {
		t.Errorf("stats after = %+v (fallback %+v); want 1 sent via fallback, active", st, st.Fallback)
	}
	if s := f.a.Health.Snapshot(); s.State != health.StateNeedsReauth {
		t.Errorf("the account is %s after its mail went through the fallback, want needs_reauth until reauthorized", s.State)
	}
	logs := f.b.Logs.String()
	if !strings.Contains(logs, "sent through the fallback account") || !strings.Contains(logs, "id="+id) ||
		!strings.Contains(logs, "fallback=backup") || !strings.Contains(logs, "mode=rewrite") {
		t.Errorf("the send through the fallback was not logged with account, fallback, id and mode:\n%s", logs)
	}
	if n := len(f.q.List()); n != 0 {
		t.Errorf("%d messages left in the queue; a message sent through the fallback is done", n)
	}

	// New mail of the held account goes through the fallback at once.
	id2 := f.submit(f.q, "From: support@example.com\r\nSubject: later\r\n\r\nx\r\n", "customer@example.net")
	f.await("the second delivery through the fallback", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id2 && e.Via == "backup" })
	if st := f.q.Stats("support"); st.SentViaFallback != 2 {
		t.Errorf("sent_via_fallback = %d, want 2", st.SentViaFallback)
	}

	// Reauthorized: the account sends its own mail again.
	f.reauthorize()
	f.await("the release", func(e Event) bool { return e.Kind == EventReleased && e.Account == "support" })
	id3 := f.submit(f.q, "From: support@example.com\r\nSubject: own\r\n\r\nx\r\n", "customer@example.net")
	f.await("delivery by the account itself", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id3 && e.Via == "" })
	if n := len(f.upA.Messages()); n != 1 {
		t.Errorf("the account's own upstream got %d messages after reauthorization, want 1", n)
	}
	if st := f.q.Stats("support"); st.Fallback == nil || st.Fallback.Active || !st.Fallback.Starts.IsZero() {
		t.Errorf("fallback after reauthorization = %+v; want inactive", st.Fallback)
	}
}

// keep: the copy goes out as stored, with the sender's MAIL FROM.
func TestFallbackKeep(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackKeep, after: time.Minute})
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(f.q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(time.Minute)
	f.q.Flush("support")
	f.await("delivery through the fallback", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id && e.Via == "backup" })
	got := f.upB.Messages()
	if len(got) != 1 || got[0].From != relaytest.Mailbox || string(got[0].Data) != ticket {
		t.Fatalf("the fallback sent %+v; want MAIL FROM %s and the message as stored", got, relaytest.Mailbox)
	}
	if st := f.q.Stats("support"); st.SentViaFallback != 1 || st.Fallback.Mode != "keep" || st.Fallback.ForcedRewrite {
		t.Errorf("stats = %+v, fallback %+v", st, st.Fallback)
	}
}

// A reauthorization before fallback_after wins: the account sends its
// own mail, the fallback sends nothing.
func TestFallbackReauthorizedFirst(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackRewrite, after: 15 * time.Minute})
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(f.q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(14 * time.Minute)
	f.q.Flush("support")
	if fb := f.q.Stats("support").Fallback; fb == nil || fb.Active {
		t.Fatalf("fallback 14 minutes into a 15-minute fallback_after = %+v, want not active", fb)
	}
	f.reauthorize()
	f.await("delivery by the account itself", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id })
	if e := f.upA.Messages(); len(e) != 1 || e[0].From != relaytest.Mailbox || string(e[0].Data) != ticket {
		t.Errorf("the account's own upstream got %+v", e)
	}
	if n := len(f.upB.Messages()); n != 0 {
		t.Errorf("the fallback sent %d messages", n)
	}
	if st := f.q.Stats("support"); st.SentViaFallback != 0 {
		t.Errorf("sent_via_fallback = %d, want 0", st.SentViaFallback)
	}
}

// keep, and the fallback's upstream refuses to send as the account
// (554 5.2.252 SendAsDenied): the fallback switches to rewrite, says so
// once, sends the message rewritten at once (no bounce), and stays
// switched across a restart until the account is reauthorized.
func TestFallbackSendAsDenied(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackKeep, after: time.Minute, noQueue: true})
	f.upB.DenySendAs(testkit.ErrSendAsDenied)
	dir := f.b.Dir + "/queue"
	open := func() (*Queue, func()) {
		o := f.opts(f.clock)
		o.Dir, o.Accounts, o.Hostname = dir, f.reg.Auth, "relayd.test"
		o.Transport = smtptransport.New(smtptransport.Options{Hostname: o.Hostname})
		q, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { q.Run(ctx); close(done) }()
		return q, func() { cancel(); <-done; q.Close() }
	}
	q, stop := open()
	defer func() { stop() }()
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(time.Minute)
	q.Flush("support")
	e := f.await("the message's outcome", func(e Event) bool { return e.ID == id && e.Kind != EventQueued })
	if e.Kind != EventDelivered || e.Via != "backup" {
		t.Fatalf("after SendAsDenied the message was %s (via %q), want delivered through the fallback, rewritten", e.Kind, e.Via)
	}
	got := f.upB.Messages()
	if len(got) != 1 || got[0].From != backupBox || !bytes.HasPrefix(got[0].Data, []byte("From: \"Support Desk\" <backup@example.com>\r\nReply-To: Support Desk <support@example.com>\r\n")) {
		t.Fatalf("the fallback sent %+v; want it rewritten", got)
	}
	said := func() int {
		return strings.Count(f.b.Logs.String(), "fallback account backup may not send as support@example.com")
	}
	if st := q.Stats("support"); st.Fallback == nil || !st.Fallback.ForcedRewrite || st.Fallback.Mode != "rewrite" {
		t.Errorf("fallback after SendAsDenied = %+v; want rewrite, forced", st.Fallback)
	}

	// The next message goes rewritten at once; nothing more is said.
	id2 := f.submit(q, ticket, "customer@example.net")
	f.await("the second delivery", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id2 && e.Via == "backup" })
	if n := said(); n != 1 {
		t.Errorf("the switch to rewrite was logged %d times, want once:\n%s", n, f.b.Logs.String())
	}
	for _, m := range f.upB.Messages() {
		if m.From != backupBox {
			t.Errorf("a copy went with MAIL FROM %s after the switch", m.From)
		}
	}

	// Across a restart the fallback still rewrites.
	stop()
	q, stop = open()
	if st := q.Stats("support"); st.Fallback == nil || !st.Fallback.ForcedRewrite {
		t.Fatalf("fallback after a restart = %+v; want still forced to rewrite", st.Fallback)
	}
	id3 := f.submit(q, ticket, "customer@example.net")
	f.await("the held account's next message", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id3 && e.Via == "backup" })
	if n := said(); n != 1 {
		t.Errorf("the switch to rewrite was logged %d times after a restart, want once", n)
	}

	// Reauthorized: keep applies again, and stays so across a restart.
	f.reauthorize()
	f.await("the release", func(e Event) bool { return e.Kind == EventReleased && e.Account == "support" })
	if st := q.Stats("support"); st.Fallback == nil || st.Fallback.ForcedRewrite || st.Fallback.Mode != "keep" {
		t.Errorf("fallback after reauthorization = %+v; want keep", st.Fallback)
	}
	stop()
	q, stop = open()
	if st := q.Stats("support"); st.Fallback == nil || st.Fallback.ForcedRewrite {
		t.Errorf("fallback after reauthorization and a restart = %+v; want keep", st.Fallback)
	}
}

// A permanent failure through the fallback: the message fails (kept in
// the spool as it was received) and the sender gets a DSN from the
// fallback's mailbox, queued under the fallback account.
func TestFallbackPermanentFailureDSN(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackRewrite, after: time.Minute})
	f.upB.RejectRecipient("nobody@example.net", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"})
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(f.q, ticket, "customer@example.net", "nobody@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(time.Minute)
	f.q.Flush("support")
	f.await("the failure", func(e Event) bool { return e.Kind == EventFailed && e.ID == id && e.Via == "backup" })
	dsn := f.await("the DSN's delivery", func(e Event) bool { return e.Kind == EventDelivered && e.Account == "backup" })
	var found bool
	for _, m := range f.upB.Messages() {
		if len(m.To) == 1 && m.To[0] == relaytest.Mailbox {
			found = true
			if m.From != backupBox || !bytes.Contains(m.Data, []byte("From: Mail Delivery System <backup@example.com>")) ||
				!bytes.Contains(m.Data, []byte("Final-Recipient: rfc822; nobody@example.net")) || !bytes.Contains(m.Data, []byte("Status: 5.1.1")) {
				t.Errorf("DSN %s: MAIL FROM %s\n%s", dsn.ID, m.From, m.Data)
			}
		}
	}
	if !found {
		t.Fatalf("no DSN reached the sender through the fallback; upstream got %+v", f.upB.Messages())
	}
	e, err := f.q.Get(id)
	if err != nil || e.State != StateFailed {
		t.Fatalf("the message = %+v, %v; want failed, kept", e, err)
	}
	r, err := f.q.Message(id)
	if err != nil {
		t.Fatal(err)
	}
	stored := new(bytes.Buffer)
	stored.ReadFrom(r)
	r.Close()
	if stored.String() != ticket {
		t.Errorf("the spool's copy changed:\n%q", stored)
	}
	if st := f.q.Stats("support"); st.SentViaFallback != 1 {
		t.Errorf("sent_via_fallback = %d, want 1 (one recipient went)", st.SentViaFallback)
	}
}

// A plain outage of the account's upstream is not a reason for the
// fallback: lifetimes run and the account probes its own upstream.
func TestFallbackNotDuringOutage(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackRewrite, after: time.Minute, aDown: true})
	id := f.submit(f.q, ticket, "customer@example.net")
	f.await("the deferral", func(e Event) bool { return e.Kind == EventDeferred && e.Account == "support" })
	for range 2 {
		// Each probe is a round of the worker after the one before, in
		// which a fallback would have sent the message.
		f.pass(2 * time.Hour)
		f.q.Flush("support")
		f.await("a probe", func(e Event) bool { return e.Kind == EventDeferred && e.Account == "support" })
	}
	if n := len(f.upB.Messages()); n != 0 {
		t.Errorf("the fallback sent %d messages during an outage", n)
	}
	if _, err := f.q.Get(id); err != nil {
		t.Errorf("the message left the queue: %v", err)
	}
	if st := f.q.Stats("support"); st.Fallback == nil || st.Fallback.Active || !st.Fallback.Starts.IsZero() || !st.Outage {
		t.Errorf("stats during an outage = %+v, fallback %+v", st, st.Fallback)
	}
}

// The worker wakes by itself when fallback_after is reached.
func TestFallbackWakesAtFallbackAfter(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackRewrite, after: 300 * time.Millisecond, realClock: true})
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(f.q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	starts := f.q.Stats("support").Fallback.Starts
	f.await("delivery through the fallback", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id && e.Via == "backup" })
	if now := time.Now(); now.Before(starts) {
		t.Errorf("sent through the fallback at %s, before fallback_after ended at %s", now, starts)
	}
}

// The fallback cannot send either (its own grant is dead): the account's
// mail stays held and status says why; once the fallback works again, the
// mail goes.
func TestFallbackAccountDown(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackRewrite, after: time.Minute})
	f.b.IdP.Revoke(relaytest.Mailbox)
	f.b.IdP.Revoke(backupBox)
	id := f.submit(f.q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(time.Minute)
	f.q.Flush("support")
	timeout := time.NewTimer(15 * time.Second)
	defer timeout.Stop()
	for {
		changed := f.fb.Health.Changed()
		if f.fb.Health.State() == health.StateNeedsReauth {
			break
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("the fallback account is %s, want needs_reauth after its login failed", f.fb.Health.State())
		}
	}
	if fb := f.q.Stats("support").Fallback; fb == nil || fb.Active || !strings.Contains(fb.Blocked, "fallback account backup cannot send either") {
		t.Errorf("fallback while the fallback account needs reauthorization = %+v", fb)
	}
	g, err := auth.ImportRefreshToken(context.Background(), f.fb.Config, nil, f.b.IdP.IssueRefreshToken("client", backupBox))
	if err != nil {
		t.Fatal(err)
	}
	if err := f.fb.Tokens.Install(g); err != nil {
		t.Fatal(err)
	}
	f.await("delivery through the fallback", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id && e.Via == "backup" })
}

// The fallback is a Graph account: the queue opens the fallback's own
// transport. In keep mode Graph refuses the sender's From
// (ErrorSendAsDenied); the fallback switches to rewrite and Graph sends
// the rewritten copy from the fallback's mailbox.
func TestFallbackThroughGraph(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackKeep, after: time.Minute, graph: true})
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(f.q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(time.Minute)
	f.q.Flush("support")
	f.await("delivery through the fallback", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id && e.Via == "backup" })
	sent := f.graph.Sent()
	if len(sent) != 1 || sent[0].Mailbox != backupBox || sent[0].From != backupBox ||
		!bytes.Contains(sent[0].MIME, []byte("Reply-To: Support Desk <support@example.com>\r\n")) ||
		len(sent[0].Recipients) != 1 || sent[0].Recipients[0] != "customer@example.net" {
		t.Fatalf("Graph sent %+v", sent)
	}
	if n := len(f.upB.Messages()); n != 0 {
		t.Errorf("the fallback's SMTP server got %d messages; it is a Graph account", n)
	}
	if fb := f.q.Stats("support").Fallback; fb == nil || !fb.ForcedRewrite {
		t.Errorf("fallback after Graph's ErrorSendAsDenied = %+v, want forced to rewrite", fb)
	}
}
