package web_test

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// rawEvents reads /events as an EventSource does: lines end at CR, LF or
// CRLF (HTML §9.2.6).
func rawEvents(t *testing.T, b *browser, ctx context.Context) <-chan [2]string {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, b.c.base+"/events", nil)
	resp, err := (&http.Client{Jar: b.hc.Jar}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan [2]string, 1000)
	go func() {
		defer resp.Body.Close()
		defer close(ch)
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<22)
		sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
			for i, c := range data {
				if c == '\n' {
					return i + 1, data[:i], nil
				}
				if c == '\r' {
					if i+1 < len(data) {
						if data[i+1] == '\n' {
							return i + 2, data[:i], nil
						}
						return i + 1, data[:i], nil
					}
					if atEOF {
						return i + 1, data[:i], nil
					}
					return 0, nil, nil
				}
			}
			if atEOF && len(data) > 0 {
				return len(data), data, nil
			}
			return 0, nil, nil
		})
		name := ""
		var data []string
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if name == "" {
					name = "message"
				}
				ch <- [2]string{name, strings.Join(data, "\n")}
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

// Anyone who can reach the SMTP listener picks a locked-out user's name;
// it goes raw into the SSE stream, where a CR starts a new field.
func TestReviewSSEInjectionThroughLockedOutUser(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	evil := "x\revent: expired\rdata: "
	for i := 0; i < 11; i++ {
		sc, err := smtp.Dial(c.d.SMTPAddrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		err = sc.Auth(sasl.NewPlainClient("", evil, "wrong"))
		sc.Close()
		t.Logf("attempt %d: %v", i, err)
	}
	if lo := c.d.Status().LockedOut; len(lo) == 0 {
		t.Fatalf("no lockout")
	} else {
		t.Logf("locked out: %q", lo[0].User)
	}
	b := c.signIn(true)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := rawEvents(t, b, ctx)
	for e := range ev {
		if e[0] == "hello" {
			continue
		}
		if e[0] != "mailboxes" {
			t.Fatalf("the first update arrives in the browser as event %q, not \"mailboxes\" (console.js reloads the page on \"expired\")", e[0])
		}
		return
	}
}

// The table is re-sent every second although nothing changed.
func TestReviewSSESendsWithoutChange(t *testing.T) {
	c := startConsole(t, consoleOpts{update: 50 * time.Millisecond})
	b := c.signIn(false)
	ctx, cancel := context.WithTimeout(context.Background(), 3500*time.Millisecond)
	defer cancel()
	n, bytes := 0, 0
	for e := range b.events(ctx) {
		if e[0] == "mailboxes" {
			n++
			bytes += len(e[1])
		}
	}
	if n > 1 {
		t.Errorf("%d full mailbox updates (%d bytes) in 3.5 s with no state change, want 1", n, bytes)
	}
}

// 16 abandoned Reauthorize clicks lock every admin out of reauthorizing
// for the sign-in TTL.
func TestReviewSignInsExhausted(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	csrf := b.csrf()
	for i := 0; i < 16; i++ {
		wantStatus(t, "click", b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}}), http.StatusSeeOther)
	}
	other := c.signIn(true)
	p := other.post("/accounts/sales/reauthorize", url.Values{"csrf": {other.csrf()}})
	if p.StatusCode != http.StatusSeeOther {
		t.Errorf("another admin's Reauthorize after 16 abandoned clicks: %s: %s", p.Status, strings.TrimSpace(extract(p.body)))
	}
}

func extract(body string) string {
	i := strings.Index(body, `role="alert">`)
	if i < 0 {
		return body
	}
	j := strings.Index(body[i:], "</p>")
	return body[i+13 : i+j]
}

// A reader's web-login links evict the admin's session.
func TestReviewReaderEvictsAdminSession(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	admin := c.signIn(true)
	for i := 0; i < 64; i++ {
		c.signIn(false)
	}
	if p := admin.get("/"); p.StatusCode != http.StatusOK {
		t.Errorf("the admin's session after a reader ran web-login 64 times: %s", p.Status)
	}
}

// The sign-in outlives the session that started it.
func TestReviewCallbackAfterLogout(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	b := c.signIn(true)
	csrf := b.csrf()
	p := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}})
	p = b.get(p.Header.Get("Location"))
	cb := p.Header.Get("Location")
	wantStatus(t, "logout", b.post("/logout", url.Values{"csrf": {csrf}}), http.StatusOK)
	c.browser().get(cb)
	if s := c.state("sales"); s == "ok" {
		t.Errorf("the callback installed a grant for a session that had signed out (state %s)", s)
	}
	_ = fmt.Sprint
}

// A pasted address of an older attempt (its state differs) ends the
// sign-in in progress, though signin.Pending.Finish leaves it waiting.
func TestReviewPasteOfAnOlderAddressEndsTheSignIn(t *testing.T) {
	c := startConsole(t, consoleOpts{noRedirect: true})
	b := c.signIn(true)
	csrf := b.csrf()
	p := b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}, "method": {"paste"}})
	page := p.Header.Get("Location")
	old := "http://127.0.0.1:8400/?code=abc&state=from-an-older-attempt"
	wantStatus(t, "paste old", b.post(page+"/paste", url.Values{"csrf": {csrf}, "address": {old}}), http.StatusSeeOther)
	p = b.get(page)
	if !strings.Contains(p.body, `name="address"`) {
		t.Errorf("after pasting an older attempt's address the sign-in no longer takes the right one:\n%s", extractMain(p.body))
	}
	// And an IdP error description is shown escaped.
	p = b.post("/accounts/sales/reauthorize", url.Values{"csrf": {csrf}, "method": {"redirect"}})
	_ = p
}

func extractMain(body string) string {
	i := strings.Index(body, "<main")
	j := strings.Index(body, "</main>")
	if i < 0 || j < 0 {
		return body
	}
	return body[i : j+7]
}



// CPU spent by 32 idle open pages (the stream cap) on 100 mailboxes.
func TestReviewStreamsCPU(t *testing.T) {
	c := startConsole(t, consoleOpts{extra: 98, update: 250 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chans []<-chan [2]string
	r := c.signIn(false)
	for i := 0; i < 12; i++ {
		chans = append(chans, r.events(ctx))
	}
	for _, ch := range chans {
		for e := range ch {
			if e[0] == "mailboxes" {
				break
			}
		}
	}
	var r0, r1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &r0)
	start := time.Now()
	n := 0
	deadline := time.After(5 * time.Second)
loop:
	for {
		select {
		case <-deadline:
			break loop
		case e := <-chans[0]:
			if e[0] == "mailboxes" {
				n++
			}
		}
	}
	syscall.Getrusage(syscall.RUSAGE_SELF, &r1)
	cpu := time.Duration(r1.Utime.Nano()-r0.Utime.Nano()) + time.Duration(r1.Stime.Nano()-r0.Stime.Nano())
	t.Logf("12 idle pages, 100 mailboxes, nothing changing: %.2f CPU-seconds per second; one page got %d full updates in %s",
		cpu.Seconds()/time.Since(start).Seconds(), n, time.Since(start).Round(time.Millisecond))
}

// Sixteen live-update streams from 127.0.0.1 (the address every ssh -L
// user has) shut everyone else out of a loopback console.
func TestReviewStreamsFillThePerAddressCap(t *testing.T) {
	c := startConsole(t, consoleOpts{})
	r := c.signIn(false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for i := 0; i < 16; i++ {
		ch := r.events(ctx)
		for e := range ch {
			if e[0] == "hello" {
				break
			}
		}
	}
	link, _ := c.d.Console().IssueLink(true, "admin")
	_, err := http.Get(link)
	if err != nil {
		t.Errorf("an admin's link while a reader holds 16 streams: %v", err)
	}
}
