package graph_test

import (
	"bytes"
	"context"
	"fmt"
	"net/mail"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/registry"
)

const mailbox = relaytest.Mailbox

// env is a queue delivering a Graph account's mail to the fake Graph.
type env struct {
	t      *testing.T
	b      *relaytest.Env
	graph  *testkit.Graph
	acct   *registry.Account
	q      *queue.Queue
	events chan queue.Event
}

func newEnv(t *testing.T, edit func(*config.Account)) *env {
	t.Helper()
	b := relaytest.New(t)
	r := &env{t: t, b: b, graph: testkit.StartGraph(t, b.IdP), events: make(chan queue.Event, 1000)}
	r.acct = b.Account(testkit.Account{Direction: "both", Transport: "graph", GraphURL: r.graph.URL,
		IMAPServer: "127.0.0.1:1", Security: "none"}, relaytest.AccountOptions{Edit: edit})
	r.q = b.Queue(relaytest.Registry(r.acct), queue.Options{OnEvent: func(e queue.Event) { r.events <- e }})
	return r
}

func (r *env) submit(from string, to []string, msg string) string {
	r.t.Helper()
	id, err := r.q.Submit(&queue.Submission{Account: "support", From: from, To: to, Body: strings.NewReader(msg)})
	if err != nil {
		r.t.Fatal(err)
	}
	return id
}

func (r *env) waitEvent(kind queue.EventKind, id string) queue.Event {
	r.t.Helper()
	return testkit.Await(r.t, r.events, "queue event "+string(kind), 15*time.Second, func(e queue.Event) bool {
		return e.Kind == kind && (id == "" || e.ID == id)
	})
}

func sorted(l []string) []string {
	l = slices.Clone(l)
	for i := range l {
		l[i] = strings.ToLower(l[i])
	}
	slices.Sort(l)
	return l
}

// The message goes, as stored, to Graph, which delivers to exactly the
// envelope's recipients: a Bcc recipient of the envelope gets it, a To or
// Cc address that is not in the envelope does not; the body is untouched.
func TestGraphDeliversToTheEnvelope(t *testing.T) {
	r := newEnv(t, nil)
	body := "Just a line.\r\n\r\nTo: in the body, not a header\r\n"
	msg := "From: Support <" + mailbox + ">\r\nTo: Ann <ann@example.net>, other@example.net\r\nCc: carl@example.net\r\nSubject: envelope\r\n\r\n" + body
	id := r.submit(mailbox, []string{"ann@example.net", "carl@example.net", "hidden@example.net"}, msg)
	r.waitEvent(queue.EventDelivered, id)
	sent := r.graph.Sent()
	if len(sent) != 1 {
		t.Fatalf("Graph got %d messages", len(sent))
	}
	m := sent[0]
	if got, want := sorted(m.Recipients), sorted([]string{"ann@example.net", "carl@example.net", "hidden@example.net"}); !slices.Equal(got, want) {
		t.Errorf("Graph delivered to %q, want the envelope %q", got, want)
	}
	if !slices.Equal(m.Bcc, []string{"hidden@example.net"}) || slices.Contains(m.To, "other@example.net") {
		t.Errorf("To %q Bcc %q: want other@ dropped and hidden@ in Bcc", m.To, m.Bcc)
	}
	if m.Mailbox != mailbox || !bytes.HasSuffix(m.MIME, []byte("\r\n\r\n"+body)) {
		t.Errorf("sent as %s:\n%s", m.Mailbox, m.MIME)
	}
	if !bytes.HasPrefix(m.MIME, []byte("Message-ID: <")) {
		t.Errorf("the stored message's own fields are missing:\n%s", m.MIME)
	}
	if !strings.Contains(r.b.Logs.String(), "adjusted the recipient header fields") {
		t.Error("the adjusted copy was not logged")
	}

	// A message whose header names exactly its envelope goes as stored.
	plain := "From: " + mailbox + "\r\nTo: ann@example.net\r\nSubject: plain\r\n\r\nx\r\n"
	id = r.submit(mailbox, []string{"ann@example.net"}, plain)
	r.waitEvent(queue.EventDelivered, id)
	if m := r.graph.Sent()[1]; !bytes.HasSuffix(m.MIME, []byte(plain)) || len(m.Bcc) != 0 {
		t.Errorf("unadjusted message changed:\n%s", m.MIME)
	}
}

// 429 with Retry-After defers the message by exactly that long, without
// moving its backoff on; the next attempt delivers it.
func TestGraphRetryAfter(t *testing.T) {
	r := newEnv(t, nil)
	r.graph.FailNext(1, 429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", "1")
	id := r.submit(mailbox, []string{"ann@example.net"}, "Subject: t\r\n\r\nx\r\n")
	r.waitEvent(queue.EventDeferred, id)
	e, err := r.q.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	if e.Attempts != 0 || e.NextAttempt.Sub(e.LastAttempt) != time.Second || !strings.Contains(e.LastError, "ApplicationThrottled") {
		t.Errorf("after a 429 with Retry-After 1: attempts %d, next in %s, last error %q; want 0, exactly 1s, Graph's code",
			e.Attempts, e.NextAttempt.Sub(e.LastAttempt), e.LastError)
	}
	r.waitEvent(queue.EventDelivered, id)
	if n := len(r.graph.Sent()); n != 1 {
		t.Errorf("sent %d times", n)
	}
	// 503 with an HTTP date, likewise.
	r.graph.FailNext(1, 503, "ServiceUnavailable", "busy", time.Now().Add(2*time.Second).UTC().Format(http1123))
	id = r.submit(mailbox, []string{"ann@example.net"}, "Subject: t2\r\n\r\nx\r\n")
	r.waitEvent(queue.EventDeferred, id)
	if e, _ := r.q.Get(id); e.Attempts != 0 || e.NextAttempt.Sub(e.LastAttempt) < time.Second {
		t.Errorf("after a 503 with a Retry-After date: attempts %d, next in %s", e.Attempts, e.NextAttempt.Sub(e.LastAttempt))
	}
	r.waitEvent(queue.EventDelivered, id)
}

const http1123 = "Mon, 02 Jan 2006 15:04:05 GMT"

// Other 5xx are retried with the queue's backoff; nothing is lost.
func TestGraphServerErrorRetried(t *testing.T) {
	r := newEnv(t, nil)
	r.graph.FailNext(2, 500, "InternalServerError", "oops", "")
	id := r.submit(mailbox, []string{"ann@example.net"}, "Subject: t\r\n\r\nx\r\n")
	r.waitEvent(queue.EventDelivered, id)
	if all, _ := r.graph.Requests(); all != 3 || len(r.graph.Sent()) != 1 {
		t.Errorf("%d requests, %d sent; want 3 and 1", all, len(r.graph.Sent()))
	}
}

// A revoked grant holds the mail (needs_reauth, nothing bounces); a new
// grant sends it at once.
func TestGraphRevokedGrantHeldThenDrained(t *testing.T) {
	r := newEnv(t, nil)
	r.b.IdP.Revoke(mailbox)
	id := r.submit(mailbox, []string{"ann@example.net"}, "Subject: held\r\n\r\nx\r\n")
	r.waitEvent(queue.EventHeld, "")
	h := r.acct.Health
	if st := h.State(); st != health.StateNeedsReauth {
		t.Fatalf("state %s, want needs_reauth", st)
	}
	if st := r.q.Stats("support"); st.Held != 1 || st.Failed != 0 {
		t.Fatalf("queue %+v, want 1 held", st)
	}
	g := &auth.Grant{RefreshToken: r.b.IdP.IssueRefreshToken("client", mailbox), GrantedAt: time.Now()}
	if err := r.acct.Tokens.Adopt(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(queue.EventDelivered, id)
	if len(r.graph.Sent()) != 1 {
		t.Error("not sent after the new grant")
	}
}

// The Graph token is its own: the mail protocols' token keeps working
// (the fake IMAP server takes it, not Graph's), a missing Mail.Send
// consent holds the mail with advice that names it and both ways to
// grant it, and the IMAP side is not affected.
func TestGraphConsentMissing(t *testing.T) {
	b := relaytest.New(t)
	graph := testkit.StartGraph(t, b.IdP)
	up := b.IMAPUpstream(testkit.IMAPOptions{})
	b.IdP.WithholdConsent(graph.Scope())
	acct := b.Account(testkit.Account{Direction: "both", Transport: "graph", GraphURL: graph.URL,
		IMAPServer: up.Addr, Security: "none"}, relaytest.AccountOptions{})
	_, err := acct.Tokens.TokenFor(context.Background(), auth.ResourceGraph)
	he := health.AsError(err)
	if he == nil || he.State != health.StateNeedsAdmin || !strings.Contains(he.Advice, "Mail.Send") ||
		!strings.Contains(he.Advice, "admin consent") || !strings.Contains(he.Advice, "relayd authorize --browser support") {
		t.Fatalf("Graph token without consent: %v", err)
	}
	if c := acct.Health.Condition(health.SourceGraph); c == nil || c.Reason != health.ReasonConsentMissing {
		t.Errorf("Graph condition %v, want consent_missing", c)
	}
	tok, err := acct.Tokens.Token(context.Background())
	if err != nil {
		t.Fatalf("mail token: %v", err)
	}
	if !b.IdP.Validate(tok, mailbox) {
		t.Error("the mail protocols' token does not open the mailbox")
	}
	if c := acct.Health.Condition(health.SourceToken); c != nil {
		t.Errorf("the mail side has a condition: %v", c)
	}

	// An admin consents: a new grant (or a release) sends the held mail.
	b.IdP.GiveConsent(graph.Scope())
	gt, err := acct.Tokens.RefreshFor(context.Background(), auth.ResourceGraph, "")
	if err != nil {
		t.Fatal(err)
	}
	if b.IdP.Validate(gt, mailbox) {
		t.Error("a Graph token opens the mailbox over IMAP")
	}
	if b.IdP.ValidateGraph(gt, graph.URL) == nil || b.IdP.ValidateGraph(tok, graph.URL) != nil {
		t.Error("tokens are not per resource")
	}
}

// Graph's 403 ErrorAccessDenied is the account's needs_admin; its
// ErrorSendAsDenied fails that message alone, with a DSN naming the From
// address.
func TestGraphForbidden(t *testing.T) {
	r := newEnv(t, nil)
	id := r.submit("other@example.com", []string{"ann@example.net"},
		"From: other@example.com\r\nTo: ann@example.net\r\nSubject: spoof\r\n\r\nx\r\n")
	r.waitEvent(queue.EventFailed, id)
	e, _ := r.q.Get(id)
	if e == nil || e.Recipients[0].Enhanced != "5.7.60" || !strings.Contains(e.Recipients[0].Reply, "ErrorSendAsDenied") {
		t.Fatalf("send-as refused: %+v", e)
	}
	dsn := r.waitDSN(t, 1)
	if !strings.Contains(string(dsn.MIME), "ErrorSendAsDenied") || !slices.Contains(dsn.Recipients, "other@example.com") {
		t.Errorf("DSN:\n%s", dsn.MIME)
	}

	r.graph.FailNext(1, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.", "")
	id = r.submit(mailbox, []string{"ann@example.net"}, "Subject: t\r\n\r\nx\r\n")
	r.waitEvent(queue.EventHeld, "")
	if c := r.acct.Health.Current(); c == nil || c.State != health.StateNeedsAdmin || c.Reason != health.ReasonGraphAccessDenied ||
		!strings.Contains(c.Advice, "Mail.Send") {
		t.Fatalf("after 403: %v", c)
	}
	if e, _ := r.q.Get(id); e == nil || e.State != queue.StateHeld {
		t.Errorf("message after 403: %+v, want queued (held)", e)
	}
	if _, err := r.q.Release("support"); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(queue.EventDelivered, id)
}

// waitDSN waits until Graph accepted n messages from relayd itself
// (delivery status notifications) and returns the last.
func (r *env) waitDSN(t *testing.T, n int) testkit.GraphMessage {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var dsns []testkit.GraphMessage
		for _, m := range r.graph.Sent() {
			if msg, err := mail.ReadMessage(bytes.NewReader(m.MIME)); err == nil && strings.HasPrefix(msg.Header.Get("Content-Type"), "multipart/report") {
				dsns = append(dsns, m)
			}
		}
		if len(dsns) >= n {
			return dsns[n-1]
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d DSN(s) at Graph, want %d", len(dsns), n)
		}
		select {
		case <-r.graph.Arrived():
		case <-time.After(time.Until(deadline)):
		}
	}
}

// A message over Graph's cap already in the spool (a reload switched the
// account to Graph) fails with a DSN that says why.
func TestGraphTooLargeInSpool(t *testing.T) {
	r := newEnv(t, nil)
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("y", 998)+"\r\n", config.GraphMaxMessage/1000+10)
	id := r.submit(mailbox, []string{"ann@example.net"}, big)
	r.waitEvent(queue.EventFailed, id)
	e, _ := r.q.Get(id)
	if e == nil || e.Recipients[0].Code != 552 || e.Recipients[0].Enhanced != "5.3.4" || !strings.Contains(e.Recipients[0].Reply, "Microsoft Graph") {
		t.Fatalf("oversized: %+v", e)
	}
	dsn := r.waitDSN(t, 1)
	if !strings.Contains(string(dsn.MIME), "too large for Microsoft Graph") {
		t.Errorf("DSN does not say why:\n%s", dsn.MIME)
	}
	if all, _ := r.graph.Requests(); all != 1 {
		t.Errorf("%d requests; want only the DSN's", all)
	}
}

// At most 4 requests per mailbox are in flight (Graph's limit), so Graph
// never answers 429 for concurrency.
func TestGraphConcurrency(t *testing.T) {
	r := newEnv(t, nil)
	release := r.graph.HoldRequests()
	defer release()
	if _, err := r.q.Hold("support"); err != nil { // one batch of all
		t.Fatal(err)
	}
	var ids []string
	for i := range 12 {
		ids = append(ids, r.submit(mailbox, []string{fmt.Sprintf("r%d@example.net", i)}, "Subject: c\r\n\r\nx\r\n"))
	}
	if _, err := r.q.Release("support"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.graph.Peak(mailbox) < 4 && time.Now().Before(deadline) {
		select {
		case <-r.events:
		case <-time.After(10 * time.Millisecond):
		}
	}
	release()
	for range ids {
		r.waitEvent(queue.EventDelivered, "")
	}
	if p := r.graph.Peak(mailbox); p != 4 {
		t.Errorf("peak %d requests in flight, want 4", p)
	}
	if _, throttled := r.graph.Requests(); throttled != 0 {
		t.Errorf("%d requests throttled for concurrency", throttled)
	}
}

// A 401 refreshes the Graph token once and sends again; a second 401 is
// the account's needs_reauth, its mail held, not bounced.
func TestGraphUnauthorized(t *testing.T) {
	r := newEnv(t, nil)
	r.graph.FailNext(1, 401, "InvalidAuthenticationToken", "Access token validation failure.", "")
	id := r.submit(mailbox, []string{"ann@example.net"}, "Subject: t\r\n\r\nx\r\n")
	r.waitEvent(queue.EventDelivered, id)
	if all, _ := r.graph.Requests(); all != 2 {
		t.Errorf("%d requests; want 2 (one refused, one after the refresh)", all)
	}

	r.graph.FailNext(2, 401, "InvalidAuthenticationToken", "Access token validation failure.", "")
	id = r.submit(mailbox, []string{"ann@example.net"}, "Subject: t2\r\n\r\nx\r\n")
	r.waitEvent(queue.EventHeld, "")
	if c := r.acct.Health.Current(); c == nil || c.State != health.StateNeedsReauth || !strings.Contains(c.Advice, "relayd authorize support") {
		t.Fatalf("after two 401s: %v", c)
	}
	if e, _ := r.q.Get(id); e == nil || e.State != queue.StateHeld {
		t.Fatalf("message after two 401s: %+v", e)
	}
	g := &auth.Grant{RefreshToken: r.b.IdP.IssueRefreshToken("client", mailbox), GrantedAt: time.Now()}
	if err := r.acct.Tokens.Adopt(context.Background(), g); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(queue.EventDelivered, id)
}

// Mail held for a missing Mail.Send consent goes once an admin consented
// and released it, as the advice says.
func TestGraphConsentGivenThenReleased(t *testing.T) {
	b := relaytest.New(t)
	graph := testkit.StartGraph(t, b.IdP)
	b.IdP.WithholdConsent(graph.Scope())
	acct := b.Account(testkit.Account{Direction: "outgoing", Transport: "graph", GraphURL: graph.URL}, relaytest.AccountOptions{})
	events := make(chan queue.Event, 100)
	q := b.Queue(relaytest.Registry(acct), queue.Options{OnEvent: func(e queue.Event) { events <- e }})
	id, err := q.Submit(&queue.Submission{Account: "support", From: mailbox, To: []string{"ann@example.net"}, Body: strings.NewReader("Subject: c\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Await(t, events, "held", 15*time.Second, func(e queue.Event) bool { return e.Kind == queue.EventHeld })
	c := acct.Health.Current()
	if c == nil || c.State != health.StateNeedsAdmin || !strings.Contains(c.Advice, "relayd queue release support") {
		t.Fatalf("held for consent: %v", c)
	}
	b.IdP.GiveConsent(graph.Scope())
	if _, err := q.Release("support"); err != nil {
		t.Fatal(err)
	}
	testkit.Await(t, events, "delivered", 15*time.Second, func(e queue.Event) bool { return e.Kind == queue.EventDelivered && e.ID == id })
	if len(graph.Sent()) != 1 {
		t.Error("not sent after consent and release")
	}
}

// A 404 for the mailbox (a mistyped email, an unlicensed mailbox) is the
// account's needs_admin, not a bounce of every message; an answer other
// than 202 is not taken as sent.
func TestGraphMailboxNotFoundAndNot202(t *testing.T) {
	r := newEnv(t, nil)
	r.graph.FailNext(1, 200, "", "", "")
	id := r.submit(mailbox, []string{"ann@example.net"}, "Subject: t\r\n\r\nx\r\n")
	r.waitEvent(queue.EventDeferred, id)
	if e, _ := r.q.Get(id); e == nil || !strings.Contains(e.LastError, "not Microsoft Graph's answer") {
		t.Fatalf("after a 200: %+v", e)
	}
	r.waitEvent(queue.EventDelivered, id) // the retry's 202

	r.graph.FailNext(1, 404, "ErrorInvalidUser", "The requested user 'support@example.com' is invalid.", "")
	id = r.submit(mailbox, []string{"ann@example.net"}, "Subject: t2\r\n\r\nx\r\n")
	r.waitEvent(queue.EventHeld, "")
	if c := r.acct.Health.Current(); c == nil || c.State != health.StateNeedsAdmin || !strings.Contains(c.Advice, "Exchange Online license") {
		t.Fatalf("after a 404: %v", c)
	}
	if e, _ := r.q.Get(id); e == nil || e.State != queue.StateHeld {
		t.Errorf("message after a 404: %+v, want held", e)
	}
}

// Graph's Retry-After is per app and mailbox: after a 429 the account
// starts no new request until it has passed, neither for the rest of the
// batch nor for new mail (requests already in flight end as they will).
func TestGraphRetryAfterHoldsTheMailbox(t *testing.T) {
	r := newEnv(t, nil)
	if _, err := r.q.Hold("support"); err != nil {
		t.Fatal(err)
	}
	for i := range 12 {
		r.submit(mailbox, []string{fmt.Sprintf("r%d@example.net", i)}, "Subject: c\r\n\r\nx\r\n")
	}
	r.graph.FailNext(100, 429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.", "60")
	if _, err := r.q.Release("support"); err != nil {
		t.Fatal(err)
	}
	r.waitEvent(queue.EventDeferred, "")
	r.submit(mailbox, []string{"late@example.net"}, "Subject: late\r\n\r\nx\r\n")
	r.q.Flush("support")
	// The connections end after their one request each; afterwards
	// nothing may happen: a bounded wait for an absence.
	quiet := time.After(500 * time.Millisecond)
	for done := false; !done; {
		select {
		case <-r.events:
		case <-quiet:
			done = true
		}
	}
	if all, _ := r.graph.Requests(); all < 1 || all > 4 {
		t.Errorf("%d requests; want at most the 4 that could be in flight before the first 429", all)
	}
	if st := r.q.Stats("support"); st.Queued != 13 || len(r.graph.Sent()) != 0 {
		t.Errorf("queue %+v, %d sent; want all 13 still queued", st, len(r.graph.Sent()))
	}
}
