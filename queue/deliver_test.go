package queue_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	. "github.com/relayd/relayd/queue"
)

const mailbox = "support@example.com"

// env is a queue delivering one account's mail to a fake XOAUTH2-only
// submission upstream, with a fake IdP behind the account's token source.
type env struct {
	t      *testing.T
	idp    *testkit.IdP
	up     *testkit.SMTPUpstream
	upAddr string
	// revive lets a listener take upAddr (upDown).
	revive func()
	cfg    *config.Account
	src    *auth.Source
	q      *Queue
	events chan Event
	logs   *testkit.SyncBuffer
}

type envOpts struct {
	style    testkit.Style
	tls      bool
	upDown   bool // start without a listening upstream
	retryMin time.Duration
	rate     int           // smtp_rate
	lifetime time.Duration // default: the queue's
}

func newDeliveryEnv(t *testing.T, o envOpts) *env {
	t.Helper()
	b := relaytest.New(t)
	r := &env{t: t, idp: b.IdP, events: make(chan Event, 1000), logs: b.Logs}
	if o.upDown {
		r.upAddr = b.DeadAddr()
		r.revive = func() { b.Revive(r.upAddr) }
		// The upstream the test starts later closes after the queue has
		// stopped (cleanups run last-in, first-out): go-smtp v0.25.1's
		// Server.Close races with a connection still in its greeting.
		t.Cleanup(func() {
			if r.up != nil {
				r.up.Close()
			}
		})
	} else {
		r.up = b.SMTPUpstream(testkit.SMTPOptions{Style: o.style, TLS: o.tls})
		r.upAddr = r.up.Addr
	}
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: r.upAddr, Security: "none", SMTPRate: o.rate},
		relaytest.AccountOptions{Edit: func(a *config.Account) {
			if o.tls {
				a.SMTPSecurity = config.SecurityTLS
				b.TrustCA(a, r.up.CertPEM)
			}
		}})
	r.cfg, r.src = acct.Config, acct.Tokens
	r.q = b.Queue(relaytest.Registry(acct), Options{RetryMin: o.retryMin, Lifetime: o.lifetime,
		OnEvent: func(e Event) { r.events <- e }})
	return r
}

// submit queues msg as the SMTP listener would.
func (r *env) submit(from string, to []string, msg []byte) error {
	_, err := r.q.Submit(&Submission{Account: "support", From: from, To: to, Body: bytes.NewReader(msg)})
	return err
}

// waitEvent waits for a queue event of kind (any kind when empty).
func (r *env) waitEvent(kind EventKind) Event {
	r.t.Helper()
	return testkit.Await(r.t, r.events, "queue event "+string(kind), 15*time.Second, func(e Event) bool { return kind == "" || e.Kind == kind })
}

// waitDelivered waits for n "delivered" events: the upstream accepted the
// messages and the queue removed them.
func (r *env) waitDelivered(n int) {
	r.t.Helper()
	for i := 0; i < n; i++ {
		r.waitEvent(EventDelivered)
	}
}

// waitMessages waits until the upstream accepted n messages.
func (r *env) waitMessages(n int) []testkit.Message {
	r.t.Helper()
	return r.up.WaitMessages(r.t, n, 15*time.Second)
}

func TestDeliveryConnectionReuse(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{})
	if _, err := r.q.Hold("support"); err != nil { // nothing is delivered until Release
		t.Fatal(err)
	}
	for i := 0; i < 9; i++ {
		if err := r.submit(mailbox, []string{fmt.Sprintf("r%d@example.net", i)}, []byte("Subject: reuse\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.q.Stats("support"); st.Held != 9 || r.up.Connections() != 0 {
		t.Fatalf("while held: %+v, %d connections", st, r.up.Connections())
	}
	if _, err := r.q.Release("support"); err != nil {
		t.Fatal(err)
	}
	got := r.waitMessages(9)
	conns := map[int64]int{}
	for _, m := range got {
		conns[m.Conn]++
	}
	if n := r.up.Connections(); n > 3 || len(conns) > 3 {
		t.Errorf("9 messages used %d connections (%v); want at most 3, reused", n, conns)
	}
	if len(conns) == 9 {
		t.Error("no connection carried more than one message")
	}
}

// Upstream down: mail is accepted and queued; once the upstream is back,
// a probe delivers it: nothing lost, nothing duplicated.
func TestDeliveryOutage(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{upDown: true})
	for i := 0; i < 3; i++ {
		if err := r.submit(mailbox, []string{fmt.Sprintf("o%d@example.net", i)}, []byte("Subject: outage\r\n\r\nx\r\n")); err != nil {
			t.Fatalf("submission during the outage = %v", err)
		}
	}
	r.waitEvent(EventDeferred)
	st := r.q.Stats("support")
	if !st.Outage || st.Queued != 3 || st.Held != 0 {
		t.Errorf("stats during the outage = %+v; want 3 queued, not held", st)
	}
	// The outage is the account's condition: degraded, smtp_unreachable,
	// naming the address; nothing held.
	h := r.src.Health().Snapshot()
	if h.State != health.StateDegraded || h.Reason != health.ReasonSMTPUnreachable ||
		!strings.Contains(h.Advice, r.upAddr) || h.LastError == "" || !h.HeldSince.IsZero() {
		t.Errorf("account during the outage = %+v; want degraded, smtp_unreachable, naming %s, not held", h, r.upAddr)
	}
	r.revive()
	up, err := testkit.NewSMTPUpstream(r.idp, testkit.SMTPOptions{Addr: r.upAddr})
	if err != nil {
		t.Fatal(err)
	}
	r.up = up // closed when the test ends, after the queue (newDeliveryEnv)
	r.waitDelivered(3)
	got := r.up.Messages()
	seen := map[string]int{}
	for _, m := range got {
		seen[m.To[0]]++
	}
	for i := 0; i < 3; i++ {
		if n := seen[fmt.Sprintf("o%d@example.net", i)]; n != 1 {
			t.Errorf("message %d delivered %d times", i, n)
		}
	}
	if st := r.q.Stats("support"); st.Outage || st.Queued != 0 {
		t.Errorf("stats after recovery = %+v", st)
	}
	if h := r.src.Health().Snapshot(); h.State != health.StateOK {
		t.Errorf("account after recovery = %s (%s), want ok", h.State, h.Reason)
	}
}

// A revoked grant holds the account's mail without bouncing it; a grant
// handed over drains it at once.
func TestDeliveryRevokedGrantHoldsThenDrains(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{retryMin: time.Hour}) // no retry would come by itself
	r.idp.Revoke(mailbox)
	if err := r.submit(mailbox, []string{"held1@example.net"}, []byte("Subject: held\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(EventHeld)
	if err := r.submit(mailbox, []string{"held2@example.net"}, []byte("Subject: held\r\n\r\ny\r\n")); err != nil {
		t.Fatalf("submission while held = %v", err)
	}
	st := r.q.Stats("support")
	if st.Hold == nil || st.Hold.State != health.StateNeedsReauth || !strings.Contains(st.Hold.Advice, "relayd authorize support") || st.Held != 2 {
		t.Fatalf("stats while held = %+v", st)
	}
	for _, e := range r.q.List() {
		if e.Attempts != 0 || e.State != StateHeld {
			t.Errorf("held message %s: attempts %d state %s; want 0 attempts, held", e.ID, e.Attempts, e.State)
		}
	}
	if n := len(r.up.Messages()); n != 0 {
		t.Fatalf("%d messages (bounces?) reached the upstream while held", n)
	}
	g, err := auth.ImportRefreshToken(context.Background(), r.cfg, nil, r.idp.IssueRefreshToken("client", mailbox))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.src.Install(g); err != nil {
		t.Fatal(err)
	}
	// Both deliveries, and the release announced exactly once before them.
	released, delivered := 0, 0
	for delivered < 2 {
		switch e := r.waitEvent(""); e.Kind {
		case EventReleased:
			released++
		case EventDelivered:
			delivered++
		}
	}
	if released != 1 {
		t.Errorf("the release was announced %d times, want once", released)
	}
	got := r.up.Messages()
	for _, m := range got {
		if strings.Contains(string(m.Data), "Undelivered") {
			t.Errorf("a bounce was sent: %q", m.Data[:100])
		}
	}
	if st := r.q.Stats("support"); st.Hold != nil || st.Queued+st.Held != 0 {
		t.Errorf("stats after the grant = %+v", st)
	}
}

// An upstream that refuses the token with 535 5.7.8 (Gmail) after a
// refresh holds the account as needs_reauth.
func TestDelivery535HoldsAccount(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reply  *smtp.SMTPError
		state  health.State
		advice string
	}{
		{"5.7.8", &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted."}, health.StateNeedsReauth, "relayd authorize support"},
		{"5.7.139", testkit.ErrSMTPAuthDisabled, health.StateNeedsAdmin, "Set-CASMailbox -Identity support@example.com -SmtpClientAuthenticationDisabled $false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDeliveryEnv(t, envOpts{retryMin: time.Hour})
			r.up.FailAuth(tc.reply)
			if err := r.submit(mailbox, []string{"x@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
				t.Fatal(err)
			}
			r.waitEvent(EventHeld)
			st := r.q.Stats("support")
			if st.Hold == nil || st.Hold.State != tc.state || !strings.Contains(st.Hold.Advice, tc.advice) {
				t.Fatalf("hold = %+v, want %s with %q", st.Hold, tc.state, tc.advice)
			}
			r.up.FailAuth(nil)
			g, _ := auth.ImportRefreshToken(context.Background(), r.cfg, nil, r.idp.IssueRefreshToken("client", mailbox))
			r.src.Install(g)
			r.waitMessages(1)
		})
	}
}

// A permanent failure for one recipient: the others are delivered, a DSN
// goes to the sender from the mailbox, and the message stays as failed.
func TestDeliveryPermanentFailureDSN(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{})
	r.up.RejectRecipient("nobody@example.net", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Recipient address rejected: User unknown"})
	orig := []byte("Subject: partly\r\nMessage-ID: <p1@example.com>\r\n\r\nx\r\n")
	if err := r.submit(mailbox, []string{"ok@example.net", "nobody@example.net"}, orig); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(EventFailed)
	r.waitDelivered(1) // the DSN
	got := r.up.Messages()
	var dsn *testkit.Message
	for i := range got {
		if got[i].To[0] == mailbox {
			dsn = &got[i]
		} else if len(got[i].To) != 1 || got[i].To[0] != "ok@example.net" {
			t.Errorf("message delivered to %v", got[i].To)
		}
	}
	if dsn == nil {
		t.Fatal("no DSN reached the sender")
	}
	for _, want := range []string{"multipart/report; report-type=delivery-status", "Final-Recipient: rfc822; nobody@example.net",
		"Action: failed", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 Recipient address rejected", "Message-ID: <p1@example.com>"} {
		if !strings.Contains(string(dsn.Data), want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Data)
		}
	}
	if dsn.From != mailbox {
		t.Errorf("DSN MAIL FROM %q, want the mailbox", dsn.From)
	}
	l := r.q.List()
	if len(l) != 1 || l[0].State != StateFailed {
		t.Fatalf("queue = %+v, want the message as failed", l)
	}
	// retry puts it back; delete removes it.
	r.up.RejectRecipient("nobody@example.net", nil)
	if err := r.q.Retry(l[0].ID); err != nil {
		t.Fatal(err)
	}
	r.waitMessages(3)
	r.waitEvent(EventDelivered)
	if l := r.q.List(); len(l) != 0 {
		t.Errorf("after retry: %+v", l)
	}
}

// A DSN that itself fails produces no further DSN.
func TestDeliveryNoDSNForDSN(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{})
	bad := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
	r.up.RejectRecipient("nobody@example.net", bad)
	r.up.RejectRecipient(mailbox, bad) // the DSN's recipient
	if err := r.submit(mailbox, []string{"nobody@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(EventFailed)
	r.waitEvent(EventFailed) // the DSN
	if l := r.q.List(); len(l) != 2 {
		t.Errorf("queue holds %d entries, want the message and its failed DSN", len(l))
	}
	if n := len(r.up.Messages()); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
}

// 4xx replies and provider throttles are retried on schedule, never bounced.
func TestDeliveryTemporaryFailuresRetried(t *testing.T) {
	for _, reply := range []*smtp.SMTPError{
		{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary server error"},
		{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 2, 0}, Message: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"},
		{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 4, 5}, Message: "Daily user sending limit exceeded."},
		{Code: 432, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Concurrent connections limit exceeded."},
	} {
		t.Run(reply.Message, func(t *testing.T) {
			r := newDeliveryEnv(t, envOpts{})
			r.up.FailData(reply)
			if err := r.submit(mailbox, []string{"x@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
				t.Fatal(err)
			}
			r.waitEvent(EventDeferred)
			e := r.q.List()[0]
			if e.Attempts != 1 || e.State != StateQueued || !strings.Contains(e.LastError, reply.Message) {
				t.Errorf("after the failure: %+v", e)
			}
			r.up.FailData(nil)
			r.waitEvent(EventDelivered)
			if got := r.waitMessages(1); len(got) != 1 {
				t.Errorf("%d messages", len(got))
			}
		})
	}
}

// Delivery over STARTTLS, as Office 365's port 587 wants.
func TestDeliveryStartTLSUpstream(t *testing.T) {
	b := relaytest.New(t)
	up := b.SMTPUpstream(testkit.SMTPOptions{STARTTLS: true})
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: up.Addr, Security: "starttls"},
		relaytest.AccountOptions{Edit: func(a *config.Account) { b.TrustCA(a, up.CertPEM) }})
	q := b.Queue(relaytest.Registry(acct), Options{})
	if _, err := q.Submit(&Submission{Account: "support", From: mailbox, To: []string{"x@example.net"},
		Body: strings.NewReader("Subject: starttls\r\n\r\nx\r\n")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.Arrived():
	case <-time.After(15 * time.Second):
		t.Fatal("not delivered over STARTTLS")
	}
	if up.Logins.Load() != 1 {
		t.Errorf("logins = %d", up.Logins.Load())
	}
}

// smtp_rate spaces deliveries: Exchange Online takes 30 messages a minute
// per mailbox; here 600 a minute, so at least 100 ms apart.
func TestDeliveryRateLimit(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{rate: 600})
	if _, err := r.q.Hold("support"); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := r.submit(mailbox, []string{fmt.Sprintf("r%d@example.net", i)}, []byte("Subject: rate\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	r.q.Release("support")
	got := r.waitMessages(4)
	var at []time.Time
	for _, m := range got {
		at = append(at, m.At)
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	if span := at[3].Sub(at[0]); span < 3*100*time.Millisecond-20*time.Millisecond {
		t.Errorf("4 messages delivered within %v; smtp_rate 600/min needs at least 300ms", span)
	}
}

// postfixLike is a scripted submission server that refuses the first AUTH
// with 535 5.7.8 and, as Postfix does (smtpd_forbidden_commands), drops a
// connection that then sends a line not starting with a letter. Later
// connections are accepted. It records the first line after the refusal.
type postfixLike struct {
	ln        net.Listener
	afterFail chan string
	conns     atomic.Int64
}

func startPostfixLike(t *testing.T) *postfixLike {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &postfixLike{ln: ln, afterFail: make(chan string, 1)}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go p.serve(c, p.conns.Add(1) == 1)
		}
	}()
	return p
}

func (p *postfixLike) serve(c net.Conn, refuse bool) {
	defer c.Close()
	br := bufio.NewReader(c)
	say := func(s string) { io.WriteString(c, s+"\r\n") }
	say("220 postfix ESMTP")
	inData := false
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case inData:
			if line == "." {
				inData = false
				say("250 2.0.0 Ok: queued")
			}
		case strings.HasPrefix(line, "EHLO"):
			say("250-postfix")
			say("250 AUTH PLAIN XOAUTH2")
		case strings.HasPrefix(line, "AUTH"):
			if refuse {
				say("535 5.7.8 Error: authentication failed")
				next, err := br.ReadString('\n')
				if err == nil {
					p.afterFail <- strings.TrimRight(next, "\r\n")
				} else {
					p.afterFail <- "(connection closed)"
				}
				if next != "" && (next[0] < 'A' || next[0] > 'Z') {
					return // "warning: non-SMTP command", and Postfix hangs up
				}
				say("221 2.0.0 Bye")
				return
			}
			say("235 2.7.0 Authentication successful")
		case line == "DATA":
			inData = true
			say("354 End data with <CR><LF>.<CR><LF>")
		case line == "QUIT":
			say("221 2.0.0 Bye")
			return
		default:
			say("250 2.0.0 Ok")
		}
	}
}

// After a refused token relayd sends no stray "*" (go-smtp v0.25.1 would),
// and retries with a refreshed token on a fresh connection: the message
// goes out without waiting for a retry interval, and is not deferred.
func TestDeliveryRefusedTokenRetriedOnFreshConnection(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{retryMin: time.Hour})
	p := startPostfixLike(t)
	r.cfg.SMTPServer = p.ln.Addr().String()
	if err := r.submit(mailbox, []string{"x@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	if got := <-p.afterFail; got != "QUIT" && got != "(connection closed)" {
		t.Errorf("after the 535 relayd sent %q", got)
	}
	r.waitEvent(EventDelivered)
	if n := p.conns.Load(); n != 2 {
		t.Errorf("%d connections, want the refused one and a fresh one", n)
	}
	if strings.Contains(r.logs.String(), "unreachable") || strings.Contains(r.logs.String(), "delivery deferred") {
		t.Errorf("a refused token was taken for an outage:\n%s", r.logs.String())
	}
}

// An outage does not stop the clock, as in Postfix: a message whose
// lifetime ends while the upstream cannot be reached fails (5.4.7, naming
// the outage) without any delivery attempt having been possible.
func TestOutageLifetimeRuns(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{upDown: true, lifetime: 50 * time.Millisecond})
	if err := r.submit(mailbox, []string{"late@example.net"}, []byte("Subject: late\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(EventFailed)
	var failed *Entry
	for _, e := range r.q.List() {
		if e.State == StateFailed {
			failed = e
		}
	}
	if failed == nil || failed.Recipients[0].Enhanced != "5.4.7" || !strings.Contains(failed.Recipients[0].Reply, "could not be reached (dialing") {
		t.Fatalf("after the lifetime: %+v, want the message failed with 5.4.7 naming the outage", failed)
	}
}

// Stats tells when the account's mail was last delivered (the console's
// "last delivery"): nothing before the first, then the time of the last.
func TestDeliveryLastDelivery(t *testing.T) {
	r := newDeliveryEnv(t, envOpts{})
	if st := r.q.Stats("support"); !st.LastDelivery.IsZero() {
		t.Fatalf("Stats before any delivery: LastDelivery = %v, want zero", st.LastDelivery)
	}
	before := time.Now()
	if err := r.submit(mailbox, []string{"r@example.net"}, []byte("Subject: last\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitDelivered(1)
	if st := r.q.Stats("support"); st.LastDelivery.Before(before) {
		t.Errorf("Stats after a delivery: LastDelivery = %v, want at or after %v", st.LastDelivery, before)
	}
}
