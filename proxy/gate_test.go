package proxy

import (
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// waitWaiting waits until n logins wait at g.
func waitWaiting(t *testing.T, g *loginGate, n int32) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for g.waiting.Load() != n {
		if time.Now().After(deadline) {
			t.Fatalf("%d logins waiting at the gate, want %d", g.waiting.Load(), n)
		}
		time.Sleep(time.Millisecond) // polling a condition, with a deadline
	}
}

// A login finding every place taken waits, without reaching the upstream,
// and goes on as soon as a place is free.
func TestIMAPLoginWaitsItsTurn(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{Logins: 1}})
	if n := cap(r.srv.logins.places); n != 1 {
		t.Fatalf("%d places, want Limits.Logins", n)
	}
	r.srv.logins.places <- struct{}{} // another login in progress
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	waitWaiting(t, r.srv.logins, 1)
	if n := r.up.Logins.Load() + r.up.Failures.Load(); n != 0 {
		t.Fatalf("a waiting login reached the upstream (%d)", n)
	}
	r.srv.logins.leave()
	if got := rw.line(); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("LOGIN once a place was free = %q", got)
	}
	if n := len(r.srv.logins.places); n != 0 {
		t.Errorf("%d places still taken after the login, want 0", n)
	}
}

// A login that waited its whole upstream timeout is told to come back,
// the log says why, and the account's health is not touched: the
// upstream did nothing wrong.
func TestIMAPLoginGivesUpWaiting(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{Logins: 1}, upstreamTimeout: 200 * time.Millisecond})
	r.srv.logins.places <- struct{}{}
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	if got, want := rw.line(), "a NO [UNAVAILABLE] too many logins in progress; try again later"; got != want {
		t.Fatalf("LOGIN = %q, want %q", got, want)
	}
	if !strings.Contains(r.logs.String(), "IMAP login gave up waiting for its turn") {
		t.Errorf("the log does not say why:\n%s", r.logs.String())
	}
	if st := r.acct.Health.Snapshot(); st.State != "ok" {
		t.Errorf("account state = %s, want ok", st.State)
	}
	if n := r.acct.IMAPSessions(); n != 0 {
		t.Errorf("IMAPSessions() = %d after the refusal, want 0", n)
	}
	// The same connection logs in once a place is free.
	r.srv.logins.leave()
	rw.send("b LOGIN " + testUser + " " + testPassword + "\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "b OK ") {
		t.Fatalf("second LOGIN = %q", got)
	}
}

func TestPOP3LoginWaitsItsTurn(t *testing.T) {
	r := newPOP3Relay(t, pop3Opts{})
	r.srv.logins.places <- struct{}{}
	if n := cap(r.srv.logins.places); n != DefaultLogins {
		t.Fatalf("%d places, want DefaultLogins", n)
	}
	for range DefaultLogins - 1 {
		r.srv.logins.places <- struct{}{}
	}
	rw := r.raw()
	rw.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)) + "\r\n")
	waitWaiting(t, r.srv.logins, 1)
	if n := r.up.Logins.Load(); n != 0 {
		t.Fatalf("a waiting login reached the upstream (%d)", n)
	}
	r.srv.logins.leave()
	if got := rw.line(); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("AUTH once a place was free = %q", got)
	}
}
