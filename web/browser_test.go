package web_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/realserver"
)

// chrome is a headless Debian chromium driven over the DevTools protocol,
// recording every request it makes and every error its pages report.
type chrome struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	requests []string // URLs
	errors   []string // console errors, exceptions, CSP violations
	shots    string   // the directory screenshots go to
	n        int
}

func startChrome(t *testing.T) *chrome {
	t.Helper()
	bin := realserver.RequireBinary(t, "chromium", "chromium")
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(bin), chromedp.NoSandbox,
		chromedp.Flag("disable-gpu", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true), chromedp.Flag("no-first-run", true),
		// A container's /dev/shm may be 64 MB: Chromium then crashes tabs.
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.WindowSize(1280, 1000))
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)

	// Screenshots go beside the test's output, one directory per run,
	// for a person to look at (browser-screenshots/ is not committed).
	dir := os.Getenv("RELAYD_SCREENSHOTS")
	if dir == "" {
		dir = "browser-screenshots"
	}
	dir = filepath.Join(dir, t.Name())
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &chrome{t: t, shots: dir}
	ctx, cancelCtx := chromedp.NewContext(actx, chromedp.WithListener(c.record))
	t.Cleanup(func() { cancelCtx(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser
		t.Fatalf("starting chromium: %v", err)
	}
	// Every step has a deadline; the browser's context has none (it
	// would stop the browser).
	c.ctx = ctx
	return c
}

// record keeps the requests and the errors of the pages. It runs in the
// loop that reads the tab's messages: it must return at once.
func (c *chrome) record(ev any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	{
		switch e := ev.(type) {
		case *network.EventRequestWillBeSent:
			c.requests = append(c.requests, e.Request.URL)
		case *runtime.EventExceptionThrown:
			c.errors = append(c.errors, "exception: "+e.ExceptionDetails.Text)
		case *runtime.EventConsoleAPICalled:
			if e.Type == runtime.ConsoleAPICalledTypeError || e.Type == runtime.ConsoleAPICalledTypeWarning {
				c.errors = append(c.errors, fmt.Sprintf("console.%s", e.Type))
			}
		case *log.EventEntryAdded:
			if e.Entry.Level == log.EntryLevelError || e.Entry.Level == log.EntryLevelWarning {
				c.errors = append(c.errors, fmt.Sprintf("%s %s: %s (%s)", e.Entry.Level, e.Entry.Source, e.Entry.Text, e.Entry.URL))
			}
		}
	}
}

func (c *chrome) run(what string, actions ...chromedp.Action[chromedp.Void]) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		c.shot("failed-" + strings.ReplaceAll(what, " ", "-"))
		c.t.Fatalf("%s: %v", what, err)
	}
}

// shot saves a full-page screenshot of the current page.
func (c *chrome) shot(name string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		c.t.Logf("screenshot %s: %v", name, err)
		return
	}
	c.n++
	path := filepath.Join(c.shots, fmt.Sprintf("%02d-%s.png", c.n, name))
	if err := os.WriteFile(path, png, 0o644); err != nil {
		c.t.Fatal(err)
	}
	abs, _ := filepath.Abs(path)
	c.t.Logf("screenshot: %s", abs)
}

func (c *chrome) text(sel string) string {
	c.t.Helper()
	return c.value("reading "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func (c *chrome) location() string {
	c.t.Helper()
	return c.value("reading the address", chromedp.Location())
}

func (c *chrome) value(what string, a chromedp.Action[string]) string {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, a)
	if err != nil {
		c.shot("failed")
		c.t.Fatalf("%s: %v", what, err)
	}
	return s
}

// poll waits until the page's expression is true.
func (c *chrome) poll(what, expr string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	if _, err := chromedp.Run(ctx, chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(10*time.Second))); err != nil {
		c.shot("failed")
		c.t.Fatalf("%s: %v", what, err)
	}
}

// The console as an admin uses it, in a real browser: the page with one
// mailbox held and one ok, Reauthorize through the identity provider and
// back, the row turning ok while the held mail goes out, and a sign-in as
// the wrong person refused with the old grant kept. No page reports an
// error, and nothing is requested outside relayd but the sign-in itself.
func TestConsoleInABrowser(t *testing.T) {
	br := startChrome(t)
	c := startConsole(t, consoleOpts{update: 100 * time.Millisecond})
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held-until-the-browser-signs-in")
	awaitQueuedAndHeld(t, c.events, "sales")
	link, _ := c.d.Console().IssueLink(true, "browser test")

	br.run("opening the sign-in link", chromedp.Navigate(link), chromedp.Click(chromedp.CSS(`form[action="/login"] button`)), chromedp.WaitVisible(chromedp.CSS("#mailbox-sales")))
	br.shot("mailboxes-one-held")
	if loc := br.location(); strings.Contains(loc, "t=") {
		t.Errorf("the link's token stayed in the address bar: %s", loc)
	}
	if s := br.text(`#mailbox-sales td[data-label="State"]`); !strings.Contains(s, "not authorized yet") {
		t.Errorf("sales's state reads %q", s)
	}
	if s := br.text(`#mailbox-support td[data-label="State"]`); !strings.HasPrefix(strings.TrimSpace(s), "ok") {
		t.Errorf("support's state reads %q", s)
	}
	if s := br.text(`#mailbox-sales td[data-label="Queue"]`); !strings.Contains(s, "1 held") {
		t.Errorf("sales's queue reads %q", s)
	}

	// Reauthorize sales: the fake IdP signs in at once and redirects.
	br.run("clicking Reauthorize", chromedp.Click(chromedp.CSS(`#mailbox-sales button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#signin-result")))
	br.shot("signed-in")
	if s := br.text("#signin-result"); !strings.Contains(s, "Signed in as sales@example.com") {
		t.Errorf("the sign-in's page says %q", s)
	}
	if loc := br.location(); strings.Contains(loc, "code=") || strings.Contains(loc, "state=") {
		t.Errorf("the code stayed in the address bar: %s", loc)
	}
	// The held mail reaches the upstream.
	c.smtpUp.WaitMessages(t, 1, 10*time.Second)
	if c.state("sales") != health.StateOK {
		t.Errorf("sales is %s after the sign-in", c.state("sales"))
	}
	br.run("going back to the mailboxes", chromedp.Click(chromedp.CSS(`main a[href="/"]`)),
		chromedp.WaitVisible(chromedp.CSS("#mailbox-sales")))
	br.poll("sales's row turning ok", `document.querySelector("#mailbox-sales").dataset.state === "ok" && document.querySelector('#mailbox-sales td[data-label="Queue"]').textContent.includes("0 held")`)
	br.shot("mailboxes-all-ok")

	// Someone else signs in for support: refused, the grant kept.
	c.idp.SignInAs("intruder@example.com")
	br.run("clicking Reauthorize as the wrong person", chromedp.Click(chromedp.CSS(`#mailbox-support button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#signin-result")))
	br.shot("wrong-person-refused")
	s := br.text("#signin-result")
	if !strings.Contains(s, "intruder@example.com") || !strings.Contains(s, "support@example.com") {
		t.Errorf("the refusal says %q, want who signed in and who should have", s)
	}
	if c.state("support") != health.StateOK {
		t.Errorf("support is %s after a refused sign-in", c.state("support"))
	}
	c.send(user, "support@example.com", "customer@example.net", "sent-with-the-old-grant")
	c.smtpUp.WaitMessages(t, 2, 10*time.Second)
	br.run("going back to the mailboxes", chromedp.Click(chromedp.CSS(`main a[href="/"]`)),
		chromedp.WaitVisible(chromedp.CSS("#mailbox-support")))
	br.shot("mailboxes-after-refusal")

	// Live updates reach the open page: hold support's queue from
	// outside the browser.
	if _, err := c.d.Queue().Hold("support"); err != nil {
		t.Fatal(err)
	}
	c.send(user, "support@example.com", "customer@example.net", "held-by-an-admin")
	br.poll("the live update", `document.querySelector('#mailbox-support td[data-label="Queue"]').textContent.includes("1 held")`)
	br.shot("live-update")

	// The queue page, and a message's headers.
	br.run("opening the queue", chromedp.Click(chromedp.CSS(`#mailbox-support td[data-label="Queue"] a`)),
		chromedp.WaitVisible(chromedp.CSS("table.queue")))
	br.shot("queue")
	br.run("opening the message", chromedp.Click(chromedp.CSS(`table.queue tbody th a`)),
		chromedp.WaitVisible(chromedp.CSS("pre.headers")))
	br.shot("message")
	if s := br.text("pre.headers"); !strings.Contains(s, "Subject: console test") {
		t.Errorf("the message's headers read %q", s)
	}

	// A phone-sized window reads the same page.
	br.run("a phone-sized window", chromedp.EmulateViewport(390, 844), chromedp.Navigate(c.base+"/"),
		chromedp.WaitVisible(chromedp.CSS("#mailbox-support")))
	br.shot("phone")

	br.mu.Lock()
	defer br.mu.Unlock()
	if len(br.errors) > 0 {
		t.Errorf("the pages reported errors:\n%s", strings.Join(br.errors, "\n"))
	}
	idp, _ := url.Parse(c.idp.URL)
	for _, r := range br.requests {
		u, err := url.Parse(r)
		switch {
		case err != nil:
			t.Errorf("request to %q", r)
		case u.Scheme == "data" || u.Scheme == "about":
		case u.Host == strings.TrimPrefix(c.base, "http://"):
		case u.Host == idp.Host && u.Path == "/authorize":
			// The sign-in itself.
		default:
			t.Errorf("a request outside relayd: %s", r)
		}
	}
	if !slices.ContainsFunc(br.requests, func(r string) bool { return strings.HasSuffix(r, "/static/console.js") }) {
		t.Errorf("the page never loaded its script; requests: %v", br.requests)
	}
}

// openLink opens a relayd web-login link and its button, as a person does.
func (c *chrome) openLink(link string) {
	c.t.Helper()
	c.run("opening the sign-in link", chromedp.Navigate(link), chromedp.Click(chromedp.CSS(`form[action="/login"] button`)),
		chromedp.WaitVisible(chromedp.CSS("#mailboxes")))
}

// The link clicked on another site (a chat, a webmail) starts a session
// all the same: the page that uses it is relayd's own.
func TestBrowserLinkFromAnotherSite(t *testing.T) {
	br := startChrome(t)
	c := startConsole(t, consoleOpts{})
	link, _ := c.d.Console().IssueLink(true, "browser test")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><title>chat</title><a id="l" href="%s">the link</a>`, html.EscapeString(link))
	}))
	defer other.Close()
	chat := strings.Replace(other.URL, "127.0.0.1", "localhost", 1) // another site
	br.run("opening the chat", chromedp.Navigate(chat), chromedp.WaitVisible(chromedp.CSS("#l")))
	br.run("clicking the link", chromedp.Click(chromedp.CSS("#l")), chromedp.WaitVisible(chromedp.CSS(`form[action="/login"] button`)),
		chromedp.Click(chromedp.CSS(`form[action="/login"] button`)), chromedp.WaitVisible(chromedp.CSS("main h1")))
	br.shot("after-a-link-from-another-site")
	if h := br.text("main h1"); h != "Mailboxes" {
		t.Errorf("after a link from another site the page is %q", h)
	}
}

// An identity provider whose sign-in page redirects to another origin
// of its own (login.microsoftonline.com/consumers to login.live.com):
// Reauthorize still gets there and back.
func TestBrowserIdPOnTwoOrigins(t *testing.T) {
	br := startChrome(t)
	var idpAuth atomic.Value
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, idpAuth.Load().(string)+"?"+r.URL.RawQuery, http.StatusFound)
	}))
	defer first.Close()
	c := startConsole(t, consoleOpts{authURL: first.URL + "/authorize"})
	idpAuth.Store(c.idp.AuthURL())
	link, _ := c.d.Console().IssueLink(true, "browser test")
	br.openLink(link)
	br.run("clicking Reauthorize", chromedp.Click(chromedp.CSS(`#mailbox-sales button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS("#signin-result")))
	br.shot("signed-in-through-two-origins")
	if s := c.state("sales"); s != health.StateOK {
		t.Errorf("sales is %s after Reauthorize through two origins", s)
	}
	br.mu.Lock()
	defer br.mu.Unlock()
	if len(br.errors) > 0 {
		t.Errorf("the pages reported errors:\n%s", strings.Join(br.errors, "\n"))
	}
}

// A live update leaves keyboard focus (a screen reader's place) where
// it was: only the rows that changed are replaced.
func TestBrowserLiveUpdateKeepsFocus(t *testing.T) {
	br := startChrome(t)
	c := startConsole(t, consoleOpts{update: 50 * time.Millisecond})
	link, _ := c.d.Console().IssueLink(true, "browser test")
	br.openLink(link)
	br.run("focusing support's Reauthorize", chromedp.Focus(chromedp.CSS(`#mailbox-support button[type="submit"]`)))
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held")
	br.poll("sales's row updating", `document.querySelector('#mailbox-sales td[data-label="Queue"]').textContent.includes("1 held")`)
	// The focused row changes too: its last error and relative times
	// are re-rendered. Hold support's queue, then send, so that its row
	// changes as well.
	if _, err := c.d.Queue().Hold("support"); err != nil {
		t.Fatal(err)
	}
	c.send(user, "support@example.com", "customer@example.net", "held by an admin")
	br.poll("support's row updating", `document.querySelector('#mailbox-support td[data-label="Queue"]').textContent.includes("1 held")`)
	focused := br.value("reading the focus", chromedp.Evaluate[string](
		`(document.activeElement.closest("form") || {}).getAttribute ? document.activeElement.closest("form").getAttribute("action") : document.activeElement.tagName`))
	if focused != "/accounts/support/reauthorize" {
		t.Errorf("after live updates the focus is on %q, want support's Reauthorize button", focused)
	}
	br.shot("focus-kept")
}
