package web_test

import (
	"bufio"
	"context"
	"fmt"
	"html"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/daemon"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/web"
)

const (
	user     = "helpdesk"
	password = "local-secret"
)

// console is a running relayd with its web console on loopback: account
// "support" signed in and ok, account "sales" never authorized (its
// outgoing mail held).
type console struct {
	t      testing.TB
	d      *daemon.Daemon
	idp    *testkit.IdP
	smtpUp *testkit.SMTPUpstream
	base   string // http://127.0.0.1:PORT
	events chan queue.Event
	logs   *testkit.SyncBuffer
}

type consoleOpts struct {
	noRedirect bool     // no [web] redirect_uri
	web        []string // more [web] lines
	// extra more accounts, box000 and on, never authorized.
	extra int
	// update is the live updates' interval; default 10 ms.
	update time.Duration
	// authURL, when set, replaces the accounts' auth_url (review).
	authURL string
}

func startConsole(t testing.TB, o consoleOpts) *console {
	t.Helper()
	b := relaytest.New(t)
	idp := b.IdP
	smtpUp := b.SMTPUpstream(testkit.SMTPOptions{Style: testkit.Exchange})
	webAddr := b.FreeAddr() // for the redirect URI
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	authURL := idp.AuthURL()
	if o.authURL != "" {
		authURL = o.authURL
	}
	acct := func(name, email, local string) testkit.Account {
		return testkit.Account{Name: name, Provider: "custom", Email: email, ClientID: "client", TokenURL: idp.TokenURL(),
			AuthURL: authURL, DeviceAuthURL: idp.DeviceAuthURL(), Issuer: idp.IssuerURL(), Direction: "outgoing",
			SMTPServer: smtpUp.Addr, Security: "none", LocalUser: local, LocalPasswordHash: string(hash)}
	}
	web := append([]string{`listen = "` + webAddr + `"`}, o.web...)
	if !o.noRedirect {
		web = append(web, `redirect_uri = "http://`+webAddr+`/oauth/callback"`)
	}
	tc := testkit.Config{
		StateDir: b.Store.Dir, StatusSocket: filepath.Join(b.Dir, "status.sock"),
		IMAPListen: []string{"127.0.0.1:0"}, SMTPListen: []string{"127.0.0.1:0"},
		RetryMin: "20ms", RetryMax: "100ms", Web: web,
		Accounts: []testkit.Account{acct("support", "support@example.com", user), acct("sales", "sales@example.com", "sales-desk")},
	}
	for i := range o.extra {
		name := fmt.Sprintf("box%03d", i)
		tc.Accounts = append(tc.Accounts, acct(name, name+"@example.com", name))
	}
	if o.update == 0 {
		o.update = 10 * time.Millisecond
	}
	cfg, err := config.Parse(tc.TOML())
	if err != nil {
		t.Fatal(err)
	}
	b.Grant("support", "client", "support@example.com")
	c := &console{t: t, idp: idp, smtpUp: smtpUp, base: "http://" + webAddr, events: make(chan queue.Event, 1000), logs: b.Logs}
	c.d, err = daemon.New(cfg, daemon.Options{Logger: b.Log, AuthFailureDelay: -1, WebUpdateInterval: o.update,
		OnQueueEvent: func(e queue.Event) { c.events <- e }})
	if err != nil {
		t.Fatalf("daemon.New() = %v", err)
	}
	c.d.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c.d.Shutdown(ctx)
	})
	return c
}

// browser is a client with its own cookies that does not follow
// redirects, so that each step can be checked.
type browser struct {
	t  testing.TB
	c  *console
	hc *http.Client
}

func (c *console) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: c.t, c: c, hc: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// signIn opens a fresh one-time link of the role.
func (c *console) signIn(admin bool) *browser {
	c.t.Helper()
	b := c.browser()
	link, _ := c.d.Console().IssueLink(admin, "test")
	resp := b.open(link)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/" {
		c.t.Fatalf("using the link: %s, Location %q; want 303 to /", resp.Status, resp.Header.Get("Location"))
	}
	return b
}

var tokenRE = regexp.MustCompile(`name="t" value="([^"]+)"`)

// open opens a relayd web-login link as a person does: its page, then
// its button.
func (b *browser) open(link string) page {
	b.t.Helper()
	p := b.get(link)
	m := tokenRE.FindStringSubmatch(p.body)
	if p.StatusCode != http.StatusOK || m == nil {
		return p
	}
	return b.post("/login", url.Values{"t": {html.UnescapeString(m[1])}})
}

var continueRE = regexp.MustCompile(`id="continue"[^>]*href="([^"]+)"|href="([^"]+)" id="continue"`)

// continueTo is where a page that moves on to the identity provider
// sends the browser.
func continueTo(t testing.TB, p page) string {
	t.Helper()
	m := continueRE.FindStringSubmatch(p.body)
	if p.StatusCode != http.StatusOK || m == nil {
		t.Fatalf("no page moving on to the sign-in: %s\n%s", p.Status, p.body)
	}
	u := m[1] + m[2]
	if !strings.Contains(p.body, `http-equiv="refresh" content="0;url=`) {
		t.Errorf("the page does not move on by itself:\n%s", p.body)
	}
	return html.UnescapeString(u)
}

type page struct {
	*http.Response
	body string
}

func (b *browser) do(req *http.Request) page {
	b.t.Helper()
	resp, err := b.hc.Do(req)
	if err != nil {
		b.t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return page{resp, string(body)}
}

func (b *browser) get(u string) page {
	b.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = b.c.base + u
	}
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	return b.do(req)
}

func (b *browser) post(path string, form url.Values) page {
	b.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, b.c.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return b.do(req)
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf reads the CSRF token from the main page.
func (b *browser) csrf() string {
	b.t.Helper()
	p := b.get("/")
	m := csrfRE.FindStringSubmatch(p.body)
	if m == nil {
		b.t.Fatalf("no CSRF token on the main page:\n%s", p.body)
	}
	return m[1]
}

func wantStatus(t testing.TB, what string, p page, code int) {
	t.Helper()
	if p.StatusCode != code {
		t.Fatalf("%s: %s, want %d\n%s", what, p.Status, code, p.body)
	}
}

// send submits a message as the local user of account support (local) to.
func (c *console) send(local, from, to, body string) {
	c.t.Helper()
	sc, err := smtp.Dial(c.d.SMTPAddrs()[0])
	if err != nil {
		c.t.Fatal(err)
	}
	defer sc.Close()
	if err := sc.Auth(sasl.NewPlainClient("", local, password)); err != nil {
		c.t.Fatal(err)
	}
	if err := sc.SendMail(from, []string{to}, strings.NewReader("Subject: console test\r\n\r\n"+body+"\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *console) state(name string) health.State {
	for _, a := range c.d.Status().Accounts {
		if a.Name == name {
			return a.State
		}
	}
	c.t.Fatalf("no account %s", name)
	return ""
}

func TestNoSessionGetsTheLoginPage(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.browser()
	for _, path := range []string{"/", "/accounts/support/queue", "/accounts/sales/reauthorize"} {
		p := b.get(path)
		wantStatus(t, "GET "+path+" without a session", p, http.StatusUnauthorized)
		if !strings.Contains(p.body, "relayd web-login") || strings.Contains(p.body, "support@example.com") {
			t.Errorf("GET %s without a session: want the login page and no mailbox:\n%s", path, p.body)
		}
	}
	// Nothing that changes anything works without a session.
	p := b.post("/accounts/sales/queue/flush", url.Values{"csrf": {"x"}})
	wantStatus(t, "POST without a session", p, http.StatusForbidden)
	// The live updates neither.
	wantStatus(t, "GET /events without a session", b.get("/events"), http.StatusForbidden)
}

func TestSecurityHeaders(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	p := c.signIn(false).get("/")
	wantStatus(t, "GET /", p, http.StatusOK)
	csp := p.Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "form-action 'self';"} {
		if !strings.Contains(csp, want) {
			t.Errorf("Content-Security-Policy %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") {
		t.Errorf("Content-Security-Policy allows inline code: %q", csp)
	}
	for h, want := range map[string]string{"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
		"Referrer-Policy": "no-referrer", "Cache-Control": "no-store"} {
		if got := p.Header.Get(h); got != want {
			t.Errorf("%s = %q, want %q", h, got, want)
		}
	}
	if strings.Contains(p.body, "<script>") || strings.Contains(p.body, " style=") || strings.Contains(p.body, "http://") && !strings.Contains(p.body, "http://localhost") {
		t.Errorf("the page has inline script, inline style or an outside address:\n%s", p.body)
	}
}

func TestOneTimeLink(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.browser()
	link, expires := c.d.Console().IssueLink(true, "test")
	if d := time.Until(expires); d < 9*time.Minute || d > 10*time.Minute {
		t.Errorf("the link expires in %s, want 10 minutes", d)
	}
	// Looking at the link uses nothing up (a link previewer).
	for range 2 {
		p := c.browser().get(link)
		wantStatus(t, "GET the link", p, http.StatusOK)
		if len(p.Cookies()) != 0 {
			t.Fatalf("GET the link set a cookie")
		}
	}
	p := b.open(link)
	wantStatus(t, "using the link", p, http.StatusSeeOther)
	var cookie *http.Cookie
	for _, ck := range p.Cookies() {
		cookie = ck
	}
	if cookie == nil || !cookie.HttpOnly || cookie.SameSite != http.SameSiteStrictMode || cookie.Path != "/" {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Strict, Path=/", cookie)
	}
	if strings.Contains(p.Header.Get("Location"), "t=") {
		t.Errorf("the redirect keeps the link's token in the address: %q", p.Header.Get("Location"))
	}
	wantStatus(t, "GET / with the session", b.get("/"), http.StatusOK)

	// A replayed link is refused, and starts nothing.
	other := c.browser()
	p = other.get(link)
	wantStatus(t, "GET a used link", p, http.StatusForbidden)
	u, _ := url.Parse(link)
	p = other.post("/login", url.Values{"t": {u.Query().Get("t")}})
	wantStatus(t, "POST a used link", p, http.StatusForbidden)
	if len(p.Cookies()) != 0 {
		t.Errorf("a used link set a cookie: %v", p.Cookies())
	}
	wantStatus(t, "GET / after a refused link", other.get("/"), http.StatusUnauthorized)
	// So is a made-up one.
	wantStatus(t, "GET a made-up link", c.browser().get("/login?t=AAAA"), http.StatusForbidden)
	wantStatus(t, "POST a made-up link", c.browser().post("/login", url.Values{"t": {"AAAA"}}), http.StatusForbidden)

	// Signing out ends the session.
	csrf := b.csrf()
	wantStatus(t, "POST /logout", b.post("/logout", url.Values{"csrf": {csrf}}), http.StatusOK)
	wantStatus(t, "GET / after signing out", b.get("/"), http.StatusUnauthorized)
}

// awaitQueuedAndHeld waits until a message of account was queued and the
// account's mail held, in either order: only then do the pages count it
// held.
func awaitQueuedAndHeld(t *testing.T, events <-chan queue.Event, account string) {
	t.Helper()
	var queued, held bool
	testkit.Await(t, events, "a message queued and held", 10*time.Second, func(e queue.Event) bool {
		if e.Account == account {
			queued = queued || e.Kind == queue.EventQueued
			held = held || e.Kind == queue.EventHeld
		}
		return queued && held
	})
}

func TestMainPage(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held until sales is authorized")
	awaitQueuedAndHeld(t, c.events, "sales")
	b := c.signIn(true)
	p := b.get("/")
	wantStatus(t, "GET /", p, http.StatusOK)
	for _, want := range []string{
		"1 of 2 mailboxes not authorized yet: sales", // the banner
		"support@example.com", "sales@example.com",
		"not authorized yet", "nobody has signed in for this mailbox yet", // state and reason in words
		"relayd authorize sales", // the advice
		"0 queued, 1 held, 0 failed",
		`action="/accounts/sales/reauthorize"`,
		"ssh -L", // the console is on loopback: how to reach it
	} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the main page lacks %q", want)
		}
	}
	// A reader sees the same, without the buttons that change things.
	p = c.signIn(false).get("/")
	wantStatus(t, "GET / read-only", p, http.StatusOK)
	if !strings.Contains(p.body, "sales@example.com") || strings.Contains(p.body, `action="/accounts/sales/reauthorize"`) {
		t.Errorf("a read-only session's page: want the mailboxes without a Reauthorize button:\n%s", p.body)
	}
}

func TestReadOnlyCannotChangeAnything(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held")
	e := testkit.Await(t, c.events, "queued", 10*time.Second, func(e queue.Event) bool { return e.Account == "sales" })
	b := c.signIn(false)
	csrf := b.csrf()
	for _, path := range []string{"/accounts/sales/reauthorize", "/accounts/sales/queue/release", "/accounts/sales/queue/flush",
		"/accounts/sales/queue/hold", "/queue/" + e.ID + "/delete", "/queue/" + e.ID + "/retry", "/queue/" + e.ID + "/hold"} {
		wantStatus(t, "POST "+path+" read-only", b.post(path, url.Values{"csrf": {csrf}}), http.StatusForbidden)
	}
	if _, err := c.d.Queue().Get(e.ID); err != nil {
		t.Errorf("the message is gone after a read-only session's requests: %v", err)
	}
	if c.idp.Refreshes() > 10 || len(c.d.Queue().Holds(e.ID)) == 0 {
		t.Errorf("the read-only session changed something: holds %v", c.d.Queue().Holds(e.ID))
	}
	// And it is not shown the message's content.
	p := b.get("/queue/" + e.ID)
	wantStatus(t, "GET a message read-only", p, http.StatusOK)
	if strings.Contains(p.body, "Subject: console test") {
		t.Errorf("a read-only session was shown the message's headers")
	}
}

func TestCSRF(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	csrf := b.csrf()
	for name, form := range map[string]url.Values{"missing": {}, "wrong": {"csrf": {csrf + "x"}}, "empty": {"csrf": {""}}} {
		p := b.post("/accounts/support/queue/hold", form)
		wantStatus(t, name+" CSRF token", p, http.StatusForbidden)
	}
	if st := c.d.Queue().Stats("support"); st.Hold != nil {
		t.Fatalf("a form without the right CSRF token held the queue: %+v", st.Hold)
	}
	// Another session's token does not do either.
	other := c.signIn(true).csrf()
	wantStatus(t, "another session's CSRF token", b.post("/accounts/support/queue/hold", url.Values{"csrf": {other}}), http.StatusForbidden)
	// A cross-site form is refused even with the token.
	req, _ := http.NewRequest(http.MethodPost, c.base+"/accounts/support/queue/hold", strings.NewReader(url.Values{"csrf": {csrf}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	wantStatus(t, "a cross-site form", b.do(req), http.StatusForbidden)
	// The right one works.
	p := b.post("/accounts/support/queue/hold", url.Values{"csrf": {csrf}})
	wantStatus(t, "the session's CSRF token", p, http.StatusSeeOther)
	if st := c.d.Queue().Stats("support"); st.Hold == nil {
		t.Errorf("the hold did not happen")
	}
	if !strings.Contains(c.logs.String(), "session_by=test") {
		t.Errorf("the change was not logged with the session's origin:\n%s", c.logs.String())
	}
}

func TestQueuePage(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	c.send("sales-desk", "sales@example.com", "customer@example.net", "body-of-the-first")
	c.send("sales-desk", "sales@example.com", "other@example.net", "body-of-the-second")
	var ids []string
	for len(ids) < 2 {
		e := testkit.Await(t, c.events, "queued", 10*time.Second, func(e queue.Event) bool { return e.Account == "sales" && e.ID != "" })
		if len(ids) == 0 || ids[0] != e.ID {
			ids = append(ids, e.ID)
		}
	}
	b := c.signIn(true)
	csrf := b.csrf()
	p := b.get("/accounts/sales/queue")
	wantStatus(t, "GET the queue page", p, http.StatusOK)
	for _, want := range []string{ids[0], ids[1], "customer@example.net", "other@example.net", "relayd authorize sales"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the queue page lacks %q", want)
		}
	}
	// Headers, for an admin.
	p = b.get("/queue/" + ids[0])
	wantStatus(t, "GET a message", p, http.StatusOK)
	if !strings.Contains(p.body, "Subject: console test") || strings.Contains(p.body, "body-of-the-first") {
		t.Errorf("the message page: want its headers and not its body:\n%s", p.body)
	}
	// Hold and release one message.
	wantStatus(t, "hold", b.post("/queue/"+ids[0]+"/hold", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	if e, _ := c.d.Queue().Get(ids[0]); e == nil || !e.AdminHold {
		t.Errorf("after hold: %+v, want held by an admin", e)
	}
	p = b.get("/accounts/sales/queue")
	if !strings.Contains(p.body, "Held message "+ids[0]) {
		t.Errorf("no word of the hold on the next page:\n%s", p.body)
	}
	wantStatus(t, "release", b.post("/queue/"+ids[0]+"/release", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	if e, _ := c.d.Queue().Get(ids[0]); e == nil || e.AdminHold {
		t.Errorf("after release: %+v, want no admin hold", e)
	}
	wantStatus(t, "retry", b.post("/queue/"+ids[0]+"/retry", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	p = b.get("/accounts/sales/queue")
	if !strings.Contains(p.body, "Still held") {
		t.Errorf("a retry of a message whose account holds it does not say it is still held:\n%s", p.body)
	}
	// Delete the other.
	wantStatus(t, "delete", b.post("/queue/"+ids[1]+"/delete", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	if _, err := c.d.Queue().Get(ids[1]); err == nil {
		t.Errorf("the deleted message is still queued")
	}
	wantStatus(t, "GET a deleted message", b.get("/queue/"+ids[1]), http.StatusNotFound)
	wantStatus(t, "an unknown operation", b.post("/queue/"+ids[0]+"/bounce", url.Values{"csrf": {csrf}}), http.StatusNotFound)
	wantStatus(t, "an unknown mailbox", b.get("/accounts/nobody/queue"), http.StatusNotFound)
	// Each change is in the log, as the socket's are.
	for _, op := range []string{"op=hold", "op=release", "op=retry", "op=delete"} {
		if !strings.Contains(c.logs.String(), op) {
			t.Errorf("no audit line with %s", op)
		}
	}
}

// reauthorizeRedirect starts the browser sign-in of sales from the main
// page's button and follows the identity provider back to the callback.
func reauthorizeRedirect(t *testing.T, c *console, b *browser) (result page, callback string) {
	t.Helper()
	p := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {b.csrf()}})
	authURL := continueTo(t, p)
	if !strings.HasPrefix(authURL, c.idp.AuthURL()) {
		t.Fatalf("reauthorize sent the browser to %q, want the IdP", authURL)
	}
	p = b.get(authURL) // the fake IdP signs in at once and redirects
	callback = p.Header.Get("Location")
	if !strings.HasPrefix(callback, c.base+"/oauth/callback?") {
		t.Fatalf("the IdP redirected to %q, want the console's callback", callback)
	}
	// The callback carries no cookie (SameSite=Strict): a fresh client.
	p = c.browser().get(callback)
	wantStatus(t, "GET the callback", p, http.StatusSeeOther)
	done := p.Header.Get("Location")
	if !strings.HasPrefix(done, "/signin/") || strings.Contains(done, "code") {
		t.Fatalf("the callback redirected to %q, want the sign-in's page without the code", done)
	}
	return b.get(done), callback
}

func TestReauthorizeInTheBrowser(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held until the console signs in")
	b := c.signIn(true)
	p, callback := reauthorizeRedirect(t, c, b)
	wantStatus(t, "the sign-in's page", p, http.StatusOK)
	if !strings.Contains(p.body, "Signed in as sales@example.com") {
		t.Errorf("the sign-in's page:\n%s", p.body)
	}
	if s := c.state("sales"); s != health.StateOK {
		t.Errorf("sales is %s after the sign-in, want ok", s)
	}
	// The held mail drains.
	testkit.Await(t, c.events, "delivered", 10*time.Second, func(e queue.Event) bool { return e.Account == "sales" && e.Kind == queue.EventDelivered })
	// The callback works once.
	p = c.browser().get(callback)
	wantStatus(t, "a replayed callback", p, http.StatusBadRequest)
	if !strings.Contains(c.logs.String(), "web console: grant handed over") {
		t.Errorf("no audit line for the grant")
	}
}

func TestCallbackWithAWrongState(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	p := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {b.csrf()}})
	authURL := continueTo(t, p)
	p = b.get(authURL)
	u, _ := url.Parse(p.Header.Get("Location"))
	q := u.Query()
	q.Set("state", q.Get("state")+"x")
	u.RawQuery = q.Encode()
	p = c.browser().get(u.String())
	wantStatus(t, "a callback with a wrong state", p, http.StatusBadRequest)
	if s := c.state("sales"); s == health.StateOK {
		t.Errorf("a callback with a wrong state authorized sales")
	}
	// Without any state, and a made-up one.
	wantStatus(t, "a callback without state", c.browser().get("/oauth/callback?code=abc"), http.StatusBadRequest)
	// The right state still works after the wrong one was refused.
	q.Set("state", strings.TrimSuffix(q.Get("state"), "x"))
	u.RawQuery = q.Encode()
	wantStatus(t, "the real callback", c.browser().get(u.String()), http.StatusSeeOther)
	if s := c.state("sales"); s != health.StateOK {
		t.Errorf("sales is %s after the real callback, want ok", s)
	}
}

func TestReauthorizeAsTheWrongPerson(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	// support has a grant; someone else signs in for it.
	before := c.state("support")
	c.idp.SignInAs("intruder@example.com")
	p := b.post("/accounts/support/reauthorize", url.Values{"csrf": {b.csrf()}})
	p = b.get(continueTo(t, p))
	p = c.browser().get(p.Header.Get("Location"))
	p = b.get(p.Header.Get("Location"))
	wantStatus(t, "the sign-in's page", p, http.StatusOK)
	if !strings.Contains(p.body, "intruder@example.com") || !strings.Contains(p.body, "support@example.com") {
		t.Errorf("the refusal does not say who signed in and who should have:\n%s", p.body)
	}
	if s := c.state("support"); s != before {
		t.Errorf("support is %s after a refused sign-in, was %s", s, before)
	}
	// The old grant still works: mail goes out.
	c.send(user, "support@example.com", "customer@example.net", "still sent with the old grant")
	testkit.Await(t, c.events, "delivered", 10*time.Second, func(e queue.Event) bool { return e.Account == "support" && e.Kind == queue.EventDelivered })
}

func TestReauthorizeWithADeviceCode(t *testing.T) {
	c := startConsole(t, consoleOpts{noRedirect: true})
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held until the device code is approved")
	b := c.signIn(true)
	p := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {b.csrf()}})
	wantStatus(t, "POST reauthorize", p, http.StatusSeeOther)
	page := p.Header.Get("Location")
	p = b.get(page)
	m := regexp.MustCompile(`<p class="code"[^>]*>([^<]+)</p>`).FindStringSubmatch(p.body)
	if m == nil || !strings.Contains(p.body, "<svg") || !strings.Contains(p.body, `http-equiv="refresh"`) {
		t.Fatalf("the device code page: want the code, a QR code and a refresh:\n%s", p.body)
	}
	// Another session does not see the code.
	if other := c.signIn(true).get(page); strings.Contains(other.body, m[1]) {
		t.Errorf("another session was shown the device code")
	}
	if err := c.idp.ApproveDevice(m[1], "sales@example.com"); err != nil {
		t.Fatal(err)
	}
	// The held mail drains once the grant is in.
	testkit.Await(t, c.events, "delivered", 10*time.Second, func(e queue.Event) bool { return e.Account == "sales" && e.Kind == queue.EventDelivered })
	if s := c.state("sales"); s != health.StateOK {
		t.Fatalf("sales is %s after the device code was approved", s)
	}
	// The page says so once the sign-in is recorded (it reloads itself
	// until then).
	deadline := time.Now().Add(10 * time.Second)
	for p = b.get(page); !strings.Contains(p.body, "Signed in as sales@example.com"); p = b.get(page) {
		if time.Now().After(deadline) {
			t.Fatalf("the sign-in's page after approval:\n%s", p.body)
		}
	}
}

func TestReauthorizeByPastingTheAddress(t *testing.T) {
	c := startConsole(t, consoleOpts{noRedirect: true})
	b := c.signIn(true)
	csrf := b.csrf()
	p := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}, "method": {"paste"}})
	wantStatus(t, "POST reauthorize (paste)", p, http.StatusSeeOther)
	page := p.Header.Get("Location")
	p = b.get(page)
	m := regexp.MustCompile(`href="(` + regexp.QuoteMeta(c.idp.AuthURL()) + `[^"]+)"`).FindStringSubmatch(p.body)
	if m == nil {
		t.Fatalf("the paste page has no sign-in link:\n%s", p.body)
	}
	authURL := html.UnescapeString(m[1])
	p = b.get(authURL)
	final := p.Header.Get("Location")
	if !strings.HasPrefix(final, "http://127.0.0.1:") {
		t.Fatalf("the IdP redirected to %q, want the loopback address", final)
	}
	// Garbage first: a clear word, and the sign-in still waits.
	wantStatus(t, "paste garbage", b.post(page+"/paste", url.Values{"csrf": {csrf}, "address": {"not an address"}}), http.StatusSeeOther)
	if p = b.get(page); !strings.Contains(p.body, "Paste the whole address") {
		t.Errorf("no word about a pasted text that is not the address:\n%s", p.body)
	}
	wantStatus(t, "paste", b.post(page+"/paste", url.Values{"csrf": {csrf}, "address": {final}}), http.StatusSeeOther)
	if s := c.state("sales"); s != health.StateOK {
		t.Errorf("sales is %s after the pasted address, want ok", s)
	}
}

func TestListenerRefusesBeyondItsCap(t *testing.T) {
	srv := web.New(web.Options{Addr: "127.0.0.1:0", MaxConns: 4})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	addr := ln.Addr().String()
	var conns []net.Conn
	defer func() {
		for _, cn := range conns {
			cn.Close()
		}
	}()
	for range 4 {
		cn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, cn)
	}
	// Each of the four is accepted (it gets an answer).
	for _, cn := range conns {
		cn.Write([]byte("GET /static/icon.svg HTTP/1.1\r\nHost: x\r\n\r\n"))
		cn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := cn.Read(make([]byte, 1)); err != nil {
			t.Fatalf("a connection within the cap: %v", err)
		}
	}
	cn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer cn.Close()
	cn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := cn.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("the fifth connection: read = %v, want it closed at once", err)
	}
	// Closing one makes room.
	conns[0].Close()
	conns = conns[1:]
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/static/console.css")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after closing a connection: %v", err)
		}
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// events opens the live updates of b's session and returns each event's
// name and data as they come.
func (b *browser) events(ctx context.Context) <-chan [2]string {
	b.t.Helper()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.c.base+"/events", nil)
	hc := &http.Client{Jar: b.hc.Jar}
	resp, err := hc.Do(req)
	if err != nil {
		b.t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		b.t.Fatalf("GET /events: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	ch := make(chan [2]string, 100)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		// As an EventSource reads (HTML, "Server-sent events"): a line
		// ends at CR, LF or CRLF.
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
		sc.Split(sseLines)
		var name string
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				// An event without data is not dispatched.
				if data != nil {
					if name == "" {
						name = "message"
					}
					ch <- [2]string{name, strings.Join(data, "\n")}
				}
				name, data = "", nil
			case strings.HasPrefix(line, "event:"):
				name = strings.TrimSpace(strings.TrimPrefix(line, "event:"))
			case strings.HasPrefix(line, "data:"):
				data = append(data, strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
			}
		}
	}()
	return ch
}

// An open page learns of a change without a reload.
func TestLiveUpdates(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := b.events(ctx)
	first := testkit.Await(t, ev, "the first update", 10*time.Second, func(e [2]string) bool { return e[0] == "mailboxes" })
	if !strings.Contains(first[1], "0 queued, 0 held, 0 failed") || !strings.Contains(first[1], "sales@example.com") {
		t.Fatalf("the first update:\n%s", first[1])
	}
	c.send("sales-desk", "sales@example.com", "customer@example.net", "held")
	testkit.Await(t, ev, "the update after a message was held", 10*time.Second, func(e [2]string) bool {
		return e[0] == "mailboxes" && strings.Contains(e[1], "0 queued, 1 held, 0 failed")
	})
	// A read-only session's updates have no buttons that change things.
	if strings.Contains(first[1], "reauthorize\"><input") {
		t.Errorf("a read-only session's update has a Reauthorize form")
	}
}

func TestReauthorizePage(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	p := c.signIn(true).get("/accounts/sales/reauthorize")
	wantStatus(t, "GET the reauthorize page", p, http.StatusOK)
	for _, want := range []string{`value="redirect"`, `value="device"`, `value="paste"`, c.base + "/oauth/callback", "http://127.0.0.1:8400"} {
		if !strings.Contains(p.body, want) {
			t.Errorf("the reauthorize page lacks %q", want)
		}
	}
	// A reader learns the ways but gets no button.
	p = c.signIn(false).get("/accounts/sales/reauthorize")
	if !strings.Contains(p.body, "read-only") || strings.Contains(p.body, `value="device"`) {
		t.Errorf("the reauthorize page of a read-only session:\n%s", p.body)
	}
	wantStatus(t, "an unknown mailbox", c.signIn(true).get("/accounts/nobody/reauthorize"), http.StatusNotFound)
	// A method the account cannot use is refused.
	b := c.signIn(true)
	wantStatus(t, "an unknown method", b.post("/accounts/sales/reauthorize", url.Values{"csrf": {b.csrf()}, "method": {"carrier-pigeon"}}), http.StatusBadRequest)
}

// Without a redirect URI the console's preferred way is the device code
// (the account allows it); the paste way is still offered.
func TestReauthorizeWithoutRedirectURI(t *testing.T) {
	c := startConsole(t, consoleOpts{noRedirect: true})
	p := c.signIn(true).get("/accounts/sales/reauthorize")
	if strings.Contains(p.body, `value="redirect"`) || !strings.Contains(p.body, `value="device"`) || !strings.Contains(p.body, `value="paste"`) {
		t.Errorf("the reauthorize page without redirect_uri:\n%s", p.body)
	}
}

func TestAccountQueueOperations(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	csrf := b.csrf()
	wantStatus(t, "hold all", b.post("/accounts/support/queue/hold", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	c.send(user, "support@example.com", "customer@example.net", "held by the console")
	testkit.Await(t, c.events, "queued", 10*time.Second, func(e queue.Event) bool { return e.Account == "support" && e.ID != "" })
	p := b.get("/accounts/support/queue")
	if !strings.Contains(p.body, "Held: 0 messages") || !strings.Contains(p.body, "1 held") {
		t.Errorf("the queue page after hold all:\n%s", p.body)
	}
	wantStatus(t, "release all", b.post("/accounts/support/queue/release", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	testkit.Await(t, c.events, "delivered", 10*time.Second, func(e queue.Event) bool { return e.Account == "support" && e.Kind == queue.EventDelivered })
	wantStatus(t, "send all now", b.post("/accounts/support/queue/flush", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	if p := b.get("/accounts/support/queue"); !strings.Contains(p.body, "Sent now: 0 messages") {
		t.Errorf("the queue page after send all now:\n%s", p.body)
	}
	wantStatus(t, "an unknown mailbox", b.post("/accounts/nobody/queue/hold", url.Values{"csrf": {csrf}}), http.StatusNotFound)
	wantStatus(t, "an unknown operation", b.post("/accounts/support/queue/bounce", url.Values{"csrf": {csrf}}), http.StatusNotFound)
}

// sseLines splits an event stream into lines ending at CR, LF or CRLF.
func sseLines(data []byte, atEOF bool) (int, []byte, error) {
	for i, c := range data {
		switch {
		case c == '\n':
			return i + 1, data[:i], nil
		case c == '\r' && i+1 < len(data) && data[i+1] == '\n':
			return i + 2, data[:i], nil
		case c == '\r' && (i+1 < len(data) || atEOF):
			return i + 1, data[:i], nil
		case c == '\r':
			return 0, nil, nil // is an LF next?
		}
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// The embedded assets are served one by one, with no listing, and
// nothing outside them.
func TestStaticFiles(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.browser()
	for path, want := range map[string]int{"/static/console.css": 200, "/static/console.js": 200, "/static/icon.svg": 200,
		"/static/": 404, "/static/../server.go": 307 /* to /server.go: 404 */, "/static/nothing.js": 404, "/static/%2e%2e/doc.go": 404} {
		if p := b.get(path); p.StatusCode != want {
			t.Errorf("GET %s: %s, want %d", path, p.Status, want)
		}
	}
}
