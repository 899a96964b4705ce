package web_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

func TestReviewBrowserReloadLoop(t *testing.T) {
	br := startChrome(t)
	c := startConsole(t, consoleOpts{update: 100 * time.Millisecond})
	for i := 0; i < 11; i++ {
		sc, _ := smtp.Dial(c.d.SMTPAddrs()[0])
		sc.Auth(sasl.NewPlainClient("", "x\revent: expired\rdata: ", "wrong"))
		sc.Close()
	}
	link, _ := c.d.Console().IssueLink(true, "review")
	br.run("open", chromedp.Navigate(link), chromedp.Click(chromedp.CSS(`form[action="/login"] button`)), chromedp.WaitVisible(chromedp.CSS("#mailbox-sales")))
	before := countReq(br, c.base+"/")
	time.Sleep(3 * time.Second) // observing, not synchronizing
	after := countReq(br, c.base+"/")
	t.Logf("GET / by the open page in 3 s: %d", after-before)
	if after-before > 1 {
		t.Errorf("the open page reloaded itself %d times in 3 s", after-before)
	}
}

func countReq(br *chrome, u string) int {
	br.mu.Lock()
	defer br.mu.Unlock()
	n := 0
	for _, r := range br.requests {
		if r == u {
			n++
		}
	}
	return n
}

// The web-login link clicked on another site (a chat, a webmail).
func TestReviewBrowserLinkFromAnotherSite(t *testing.T) {
	br := startChrome(t)
	c := startConsole(t, consoleOpts{})
	link, _ := c.d.Console().IssueLink(true, "review")
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `<!doctype html><a id="l" href="%s">the link</a>`, link)
	}))
	defer other.Close()
	page := strings.Replace(other.URL, "127.0.0.1", "localhost", 1) // another site
	br.run("open the chat", chromedp.Navigate(page), chromedp.WaitVisible(chromedp.CSS("#l")))
	br.run("click the link", chromedp.Click(chromedp.CSS("#l")), chromedp.WaitVisible(chromedp.CSS(`form[action="/login"] button`)), chromedp.Click(chromedp.CSS(`form[action="/login"] button`)), chromedp.WaitVisible(chromedp.CSS("main h1")))
	br.shot("after-link-from-another-site")
	if h := br.text("main h1"); h != "Mailboxes" {
		t.Errorf("after clicking the link on another site the page is %q, want the mailboxes", h)
	}
	br.run("reload", chromedp.Reload(), chromedp.WaitVisible(chromedp.CSS("main h1")))
	t.Logf("after a reload: %q", br.text("main h1"))
}

// An identity provider whose authorization endpoint redirects to another
// origin (login.microsoftonline.com/consumers → login.live.com).
func TestReviewBrowserFormActionRedirectChain(t *testing.T) {
	br := startChrome(t)
	var target atomic.Value
	hops := 0
	redir := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hops++
		http.Redirect(w, r, target.Load().(string)+"?"+r.URL.RawQuery, http.StatusFound)
	}))
	defer redir.Close()
	c := startConsole(t, consoleOpts{authURL: redir.URL + "/authorize"})
	target.Store(c.idp.AuthURL())
	link, _ := c.d.Console().IssueLink(true, "review")
	br.run("open", chromedp.Navigate(link), chromedp.Click(chromedp.CSS(`form[action="/login"] button`)), chromedp.WaitVisible(chromedp.CSS("#mailbox-sales")))
	ctxErr := func() (err error) {
		defer func() { recover() }()
		return nil
	}
	_ = ctxErr
	br.run("click Reauthorize", chromedp.Click(chromedp.CSS(`#mailbox-sales button[type="submit"]`)))
	time.Sleep(2 * time.Second) // observing
	br.shot("after-reauthorize-with-a-redirecting-idp")
	t.Logf("hops at the redirector: %d; location %s; sales %s", hops, br.location(), c.state("sales"))
	br.mu.Lock()
	t.Logf("errors: %v", br.errors)
	br.mu.Unlock()
	if c.state("sales") != "ok" {
		t.Errorf("Reauthorize through an IdP that redirects to another origin did not finish: %s", c.state("sales"))
	}
}

// Keyboard focus on the page (a screen reader's place) with nothing changing.
func TestReviewBrowserFocusLost(t *testing.T) {
	br := startChrome(t)
	c := startConsole(t, consoleOpts{update: 250 * time.Millisecond})
	link, _ := c.d.Console().IssueLink(true, "review")
	br.run("open", chromedp.Navigate(link), chromedp.Click(chromedp.CSS(`form[action="/login"] button`)), chromedp.WaitVisible(chromedp.CSS("#mailbox-sales")))
	br.run("focus", chromedp.Focus(chromedp.CSS(`#mailbox-sales button[type="submit"]`)))
	before := br.value("active", chromedp.Evaluate[string](`document.activeElement.tagName`))
	time.Sleep(2500 * time.Millisecond) // observing
	after := br.value("active", chromedp.Evaluate[string](`document.activeElement.tagName`))
	t.Logf("focus before %s, 2.5 s later %s", before, after)
	if after != before {
		t.Errorf("keyboard focus moved from %s to %s with no state change", before, after)
	}
}
