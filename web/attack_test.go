package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// A name a client sends in SMTP AUTH reaches the page (a locked-out
// user): a CR in it must not start an event of its own in the live
// updates (an EventSource ends a line at CR too).
func TestLiveUpdatesFrameClientText(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	for range 11 {
		sc, err := smtp.Dial(c.d.SMTPAddrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		sc.Auth(sasl.NewPlainClient("", "x\revent: expired\rdata: ", "wrong"))
		sc.Close()
	}
	if len(c.d.Status().LockedOut) == 0 {
		t.Fatal("the user was not locked out")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := c.signIn(false).events(ctx)
	first := testkit.Await(t, ev, "the first update", 10*time.Second, func(e [2]string) bool { return e[0] != "hello" })
	if first[0] != "mailboxes" || !strings.Contains(first[1], "is locked out") {
		t.Fatalf("the first update is %q:\n%s", first[0], first[1])
	}
}

// An open page gets an update when something changed, and only then.
func TestLiveUpdatesOnlyOnChange(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := c.signIn(true).events(ctx)
	last := testkit.Await(t, ev, "the first update", 10*time.Second, func(e [2]string) bool { return e[0] == "mailboxes" })[1]
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held")
	testkit.Await(t, ev, "the update", 10*time.Second, func(e [2]string) bool {
		if e[0] != "mailboxes" {
			return false
		}
		if e[1] == last {
			t.Fatalf("an update without a change")
		}
		last = e[1]
		return strings.Contains(e[1], "0 queued, 1 held")
	})
}

// One session's tabs cannot take every live-update stream, and on a
// loopback console (every ssh -L user is 127.0.0.1) many connections
// from one address do not shut others out.
func TestLiveUpdateStreamsPerSession(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 4 {
		r := c.signIn(false)
		for range 4 {
			testkit.Await(t, r.events(ctx), "hello", 10*time.Second, func(e [2]string) bool { return e[0] == "hello" })
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/events", nil)
		resp, err := (&http.Client{Jar: r.hc.Jar}).Do(req)
		if err != nil || resp.StatusCode != http.StatusTooManyRequests {
			t.Fatalf("a session's fifth stream: %v %v, want 429", resp.Status, err)
		}
		resp.Body.Close()
	}
	// 16 streams from 127.0.0.1 are open: an admin still signs in.
	wantStatus(t, "the admin's page", c.signIn(true).get("/"), http.StatusOK)
}

// Readers (any member of group relayd) cannot push an admin's session or
// link out of the console's bounded memory.
func TestReadersCannotEvictAnAdmin(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	admin := c.signIn(true)
	pendingLink, _ := c.d.Console().IssueLink(true, "admin's unused link")
	for range 100 {
		c.signIn(false)
	}
	wantStatus(t, "the admin's session after 100 reader sessions", admin.get("/"), http.StatusOK)
	if p := c.browser().open(pendingLink); p.StatusCode != http.StatusSeeOther {
		t.Errorf("the admin's unused link after 100 reader links: %s", p.Status)
	}
}

// Clicking Reauthorize again replaces one's own unfinished sign-in
// rather than piling them up; the cap counts sign-ins in progress across
// sessions, and says so with 503.
func TestSignInsInProgress(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	csrf := b.csrf()
	for range 20 {
		continueTo(t, b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}}))
	}
	for i := range 15 {
		o := c.signIn(true)
		if p := o.post("/accounts/sales/reauthorize", url.Values{"csrf": {o.csrf()}}); p.StatusCode != http.StatusOK {
			t.Fatalf("admin %d's Reauthorize: %s", i, p.Status)
		}
	}
	o := c.signIn(true)
	wantStatus(t, "the 17th sign-in in progress", o.post("/accounts/sales/reauthorize", url.Values{"csrf": {o.csrf()}}), http.StatusServiceUnavailable)
	// The first admin's latest sign-in still works.
	p := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}})
	p = b.get(continueTo(t, p))
	p = c.browser().get(p.Header.Get("Location"))
	wantStatus(t, "the callback", p, http.StatusSeeOther)
	if s := c.state("sales"); s != health.StateOK {
		t.Errorf("sales is %s", s)
	}
}

// A sign-in acts for the session that started it, no longer than it
// lives: after signing out, its callback stores nothing.
func TestSignInEndsWithItsSession(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	csrf := b.csrf()
	p := b.get(continueTo(t, b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}})))
	callback := p.Header.Get("Location")
	wantStatus(t, "sign out", b.post("/logout", url.Values{"csrf": {csrf}}), http.StatusOK)
	c.browser().get(callback)
	if s := c.state("sales"); s == health.StateOK {
		t.Errorf("the callback of a signed-out session's sign-in stored a grant")
	}
}

// A pasted address of another sign-in (an older attempt's) is refused and
// the sign-in goes on waiting for its own.
func TestPasteOfAnotherSignInsAddress(t *testing.T) {
	c := startConsole(t, consoleOpts{noRedirect: true})
	b := c.signIn(true)
	csrf := b.csrf()
	page := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}, "method": {"paste"}}).Header.Get("Location")
	old := "http://127.0.0.1:8400/?code=abc&state=from-an-older-attempt"
	wantStatus(t, "paste another's address", b.post(page+"/paste", url.Values{"csrf": {csrf}, "address": {old}}), http.StatusSeeOther)
	p := b.get(page)
	if !strings.Contains(p.body, `name="address"`) || !strings.Contains(p.body, "belongs to another sign-in") {
		t.Fatalf("after another sign-in's address:\n%s", p.body)
	}
	if c.idp.Refreshes() != 0 {
		t.Errorf("another sign-in's code was sent to the IdP")
	}
}
