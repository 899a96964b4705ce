package web_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/web"
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

// A live-update stream with nothing to send stays open past the request
// timeout, over HTTP/1.1 and over HTTP/2 (the console under TLS), where a
// write deadline left pending resets the stream even without a write.
func TestLiveUpdateStreamStaysOpenWhenQuiet(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := "http1"
		if useTLS {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			c := startConsole(t, consoleOpts{})
			ts := httptest.NewUnstartedServer(http.NotFoundHandler())
			ts.EnableHTTP2 = true
			ts.StartTLS()
			hc := ts.Client()
			certs := ts.TLS.Certificates
			ts.Close()
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			o := web.Options{Backend: c.d, Addr: ln.Addr().String(), RequestTimeout: time.Second, UpdateInterval: 10 * time.Millisecond}
			scheme := "http"
			if useTLS {
				o.TLS = &tls.Config{Certificates: certs}
				scheme = "https"
				hc.Transport.(*http.Transport).ForceAttemptHTTP2 = true
			} else {
				hc = &http.Client{}
			}
			s := web.New(o)
			go s.Serve(ln)
			defer s.Close()
			jar, _ := cookiejar.New(nil)
			hc.Jar = jar
			hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			link, _ := s.IssueLink(false, "test")
			link = scheme + "://" + ln.Addr().String() + link[strings.Index(link, "/login"):]
			resp, err := hc.Get(link)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			m := regexp.MustCompile(`name="t" value="([^"]+)"`).FindStringSubmatch(string(b))
			resp, err = hc.PostForm(scheme+"://"+ln.Addr().String()+"/login", url.Values{"t": {html.UnescapeString(m[1])}})
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+ln.Addr().String()+"/events", nil)
			resp, err = hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("events over %s: %s", resp.Proto, resp.Status)
			start := time.Now()
			sc := bufio.NewScanner(resp.Body)
			sc.Buffer(make([]byte, 1<<20), 1<<22)
			for sc.Scan() {
			}
			if ctx.Err() == nil {
				t.Errorf("over %s the stream ended after %v without a change (err %v); want it open for 3 s (the request timeout is 1 s)", resp.Proto, time.Since(start).Round(time.Millisecond), sc.Err())
			}
		})
	}
}

// Login CSRF: a page on another site posts the attacker's link to
// /login; the victim's browser must not get the attacker's session.
func TestLoginFromAnotherSiteRefused(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	link, _ := c.d.Console().IssueLink(true, "attacker")
	tok := link[strings.Index(link, "t=")+2:]
	tok, _ = url.QueryUnescape(tok)
	for name, h := range map[string][2]string{
		"sec-fetch-site cross-site": {"Sec-Fetch-Site", "cross-site"},
		"sec-fetch-site same-site":  {"Sec-Fetch-Site", "same-site"},
		"origin only":               {"Origin", "http://evil.example"},
		"origin null":               {"Origin", "null"},
	} {
		b := c.browser()
		req, _ := http.NewRequest(http.MethodPost, c.base+"/login", strings.NewReader(url.Values{"t": {tok}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set(h[0], h[1])
		p := b.do(req)
		if p.StatusCode != http.StatusForbidden || len(p.Cookies()) != 0 {
			t.Errorf("%s: %s, cookies %v; want 403 and no cookie", name, p.Status, p.Cookies())
		}
	}
	// The link still works from relayd's own page.
	if p := c.browser().open(link); p.StatusCode != http.StatusSeeOther {
		t.Errorf("the link after the refused cross-site posts: %s", p.Status)
	}
}

func watchers() int {
	buf := make([]byte, 1<<22)
	n := runtime.Stack(buf, true)
	return strings.Count(string(buf[:n]), "web.(*watch).run(")
}

// One watcher goroutine serves every open stream, and none is left when
// they end or the console shuts down.
func TestWatcherLifecycle(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	waitWatchers := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for watchers() != want {
			if time.Now().After(deadline) {
				t.Fatalf("%d watchers, want %d", watchers(), want)
			}
			runtime.Gosched()
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	for range 3 {
		b := c.signIn(false)
		for range 4 {
			testkit.Await(t, b.events(ctx), "hello", 10*time.Second, func(e [2]string) bool { return e[0] == "hello" })
		}
	}
	waitWatchers(1)
	cancel()
	waitWatchers(0)
	// Shut down with a stream open: the stream ends, and the watcher.
	ch := c.signIn(true).events(context.Background())
	<-ch
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	c.d.Shutdown(sctx)
	for range ch {
	}
	waitWatchers(0)
}

// Readers (any member of group relayd) get half of the live-update
// streams at most: an admin's page still gets its own.
func TestReadersCannotTakeEveryStream(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	refused := 0
	for range 8 {
		b := c.signIn(false)
		for range 4 {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/events", nil)
			resp, err := (&http.Client{Jar: b.hc.Jar}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode == http.StatusServiceUnavailable {
				refused++
				resp.Body.Close()
			}
		}
	}
	if refused != 16 {
		t.Errorf("%d of 32 reader streams refused, want 16", refused)
	}
	testkit.Await(t, c.signIn(true).events(ctx), "an admin's update", 10*time.Second, func(e [2]string) bool { return e[0] == "mailboxes" })
}

// Every form of the console refuses a POST without the session's CSRF
// token, or with another session's, and changes nothing.
func TestEveryFormNeedsTheCSRFToken(t *testing.T) {
	c := startConsole(t, consoleOpts{noRedirect: true})
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held")
	e := testkit.Await(t, c.events, "queued", 10*time.Second, func(e queue.Event) bool { return e.Account == "sales" && e.ID != "" })
	b := c.signIn(true)
	own := b.csrf()
	// A paste sign-in in progress, for its form.
	page := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {own}, "method": {"paste"}}).Header.Get("Location")
	other := c.signIn(true).csrf()
	forms := []string{"/logout", "/accounts/sales/reauthorize", "/accounts/sales/queue/hold", "/accounts/sales/queue/release",
		"/accounts/sales/queue/flush", "/queue/" + e.ID + "/hold", "/queue/" + e.ID + "/release", "/queue/" + e.ID + "/retry",
		"/queue/" + e.ID + "/delete", page + "/paste"}
	for _, path := range forms {
		for name, form := range map[string]url.Values{"no token": {}, "another session's token": {"csrf": {other}}} {
			form.Set("address", "http://127.0.0.1:8400/?code=x&state=y")
			form.Set("method", "device")
			wantStatus(t, path+" with "+name, b.post(path, form), http.StatusForbidden)
		}
	}
	if _, err := c.d.Queue().Get(e.ID); err != nil {
		t.Errorf("the message after the refused forms: %v", err)
	}
	wantStatus(t, "the session after a refused logout", b.get("/"), http.StatusOK)
	if c.idp.Refreshes() != 0 {
		t.Errorf("a refused form reached the identity provider")
	}
}
