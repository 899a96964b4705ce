package proxy

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
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
// and goes on as soon as a place is free; the place is given back.
func TestIMAPLoginWaitsItsTurn(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{Logins: 1}})
	g := r.srv.logins.gate(r.acct.Config.IMAPServer)
	if n := cap(g.places); n != 1 {
		t.Fatalf("%d places, want Limits.Logins", n)
	}
	g.places <- struct{}{} // another login in progress
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	waitWaiting(t, g, 1)
	if n := r.up.Logins.Load() + r.up.Failures.Load(); n != 0 {
		t.Fatalf("a waiting login reached the upstream (%d)", n)
	}
	g.leave()
	if got := rw.line(); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("LOGIN once a place was free = %q", got)
	}
	if n := len(g.places); n != 0 {
		t.Errorf("%d places still taken after the login, want 0", n)
	}
	// Another upstream server's logins do not wait for this one's.
	if other := r.srv.logins.gate("imap.other.example:993"); other == g || len(other.places) != 0 {
		t.Error("two upstream servers share a gate")
	}
}

// The login's upstream timeout starts once it has its place: a login that
// waited most of that time for its turn still has all of it for a slow
// upstream, which is not taken for unreachable.
func TestIMAPLoginTimeoutStartsWithItsPlace(t *testing.T) {
	u := newRawUpstream(t, false)
	u.greetAfter = 800 * time.Millisecond
	r := newTestRelay(t, relayOpts{upstream: u.start, limits: Limits{Logins: 1}, upstreamTimeout: 2 * time.Second})
	g := r.srv.logins.gate(r.acct.Config.IMAPServer)
	g.places <- struct{}{}
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	waitWaiting(t, g, 1)
	time.Sleep(1400 * time.Millisecond) // the login waits its turn this long
	g.leave()
	if got := rw.line(); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("LOGIN = %q, want OK\nlog:\n%s", got, r.logs.String())
	}
	<-u.conns
	if st := r.acct.Health.State(); st != health.StateOK {
		t.Errorf("account state = %s, want ok", st)
	}
}

// A login that waited its whole upstream timeout is told to come back,
// the log says why once a minute however many give up, and the account's
// health and its places are untouched: the upstream did nothing wrong.
func TestIMAPLoginGivesUpWaiting(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{Logins: 1}, upstreamTimeout: 200 * time.Millisecond})
	g := r.srv.logins.gate(r.acct.Config.IMAPServer)
	g.places <- struct{}{}
	rw := r.raw()
	for _, tag := range []string{"a", "b"} {
		rw.send(tag + " LOGIN " + testUser + " " + testPassword + "\r\n")
		if got, want := rw.line(), tag+" NO [UNAVAILABLE] too many logins in progress; try again later"; got != want {
			t.Fatalf("LOGIN = %q, want %q", got, want)
		}
	}
	if n := strings.Count(r.logs.String(), "IMAP login gave up waiting for its turn"); n != 1 {
		t.Errorf("two logins that gave up were logged %d times, want once:\n%s", n, r.logs.String())
	}
	if st := r.acct.Health.State(); st != health.StateOK {
		t.Errorf("account state = %s, want ok", st)
	}
	if n := r.acct.IMAPSessions(); n != 0 {
		t.Errorf("IMAPSessions() = %d after the refusals, want 0", n)
	}
	// The same connection logs in once a place is free.
	g.leave()
	rw.send("c LOGIN " + testUser + " " + testPassword + "\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "c OK ") {
		t.Fatalf("LOGIN with a place free = %q", got)
	}
}

// A failed upstream login gives its place back.
func TestIMAPFailedLoginGivesItsPlaceBack(t *testing.T) {
	r := newTestRelay(t, relayOpts{upstream: refusing(t), limits: Limits{Logins: 1}})
	rw := r.raw()
	for _, tag := range []string{"a", "b"} {
		rw.send(tag + " LOGIN " + testUser + " " + testPassword + "\r\n")
		if got := rw.line(); !strings.HasPrefix(got, tag+" NO [UNAVAILABLE] the mail server is unreachable") {
			t.Fatalf("LOGIN %s = %q", tag, got)
		}
	}
	if n := len(r.srv.logins.gate(r.acct.Config.IMAPServer).places); n != 0 {
		t.Errorf("%d places taken after failed logins, want 0", n)
	}
}

// Shutting down wakes the logins waiting their turn: Close does not wait
// for their upstream timeout.
func TestIMAPCloseWakesWaitingLogins(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{Logins: 1}, upstreamTimeout: time.Hour})
	g := r.srv.logins.gate(r.acct.Config.IMAPServer)
	g.places <- struct{}{}
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	waitWaiting(t, g, 1)
	closed := make(chan struct{})
	go func() { r.srv.Close(); close(closed) }()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waited for a login waiting its turn")
	}
}

func TestPOP3LoginWaitsItsTurn(t *testing.T) {
	r := newPOP3Relay(t, pop3Opts{})
	g := r.srv.logins.gate(r.acct.Config.POP3Server)
	if n := cap(g.places); n != DefaultLogins {
		t.Fatalf("%d places, want DefaultLogins", n)
	}
	for range DefaultLogins {
		g.places <- struct{}{}
	}
	rw := r.raw()
	rw.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)) + "\r\n")
	waitWaiting(t, g, 1)
	if n := r.up.Logins.Load(); n != 0 {
		t.Fatalf("a waiting login reached the upstream (%d)", n)
	}
	g.leave()
	if got := rw.line(); !strings.HasPrefix(got, "+OK") {
		t.Fatalf("AUTH once a place was free = %q", got)
	}
}

func TestPOP3LoginGivesUpWaiting(t *testing.T) {
	r := newPOP3Relay(t, pop3Opts{upstreamTimeout: 200 * time.Millisecond})
	g := r.srv.logins.gate(r.acct.Config.POP3Server)
	for range DefaultLogins {
		g.places <- struct{}{}
	}
	rw := r.raw()
	rw.send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)) + "\r\n")
	if got, want := rw.line(), "-ERR [SYS/TEMP] too many logins in progress; try again later"; got != want {
		t.Fatalf("AUTH = %q, want %q", got, want)
	}
	if !strings.Contains(r.logs.String(), "POP3 login gave up waiting for its turn") {
		t.Errorf("the log does not say why:\n%s", r.logs.String())
	}
	if st := r.acct.Health.State(); st != health.StateOK {
		t.Errorf("account state = %s, want ok", st)
	}
}

// refusals records the limits a Recorder is told refused something.
type refusals struct {
	nopRecorder
	limits []string
}

func (r *refusals) Refused(proto, limit string) { r.limits = append(r.limits, proto+" "+limit) }

// What a failed login is recorded as: a give-up at the gate is a refusal
// by the logins limit, a shutdown is no failure of the upstream's.
func TestFailedLoginOutcome(t *testing.T) {
	g := newLoginGates(1)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	for _, tc := range []struct {
		err     error
		outcome string
		refused string
	}{
		{errLoginsBusy, "limited", "imap logins"},
		{errGatesClosed, "refused", ""},
		{errors.New("dial tcp: refused"), "upstream_failed", ""},
	} {
		rec := &refusals{}
		if got := failedLogin(tc.err, g, rec, "imap", log); got != tc.outcome {
			t.Errorf("%v: outcome %q, want %q", tc.err, got, tc.outcome)
		}
		if got := strings.Join(rec.limits, ","); got != tc.refused {
			t.Errorf("%v: refused %q, want %q", tc.err, got, tc.refused)
		}
	}
}

// Shutting down ends a login in progress, and a later one never starts.
func TestLoginGatesClose(t *testing.T) {
	g := newLoginGates(1)
	started := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- g.run("imap.example:993", time.Hour, func(ctx context.Context) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		})
	}()
	<-started
	g.close()
	select {
	case err := <-done:
		if !errors.Is(err, errGatesClosed) {
			t.Errorf("login in progress at shutdown = %v, want errGatesClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("shutting down did not end the login in progress")
	}
	called := false
	err := g.run("IMAP.example:993", time.Hour, func(context.Context) error { called = true; return nil })
	if called || !errors.Is(err, errGatesClosed) {
		t.Errorf("login after shutdown: called %v, %v; want not called, errGatesClosed", called, err)
	}
	if g.gate("IMAP.EXAMPLE:993") != g.gate("imap.example:993") {
		t.Error("two spellings of one server have two gates")
	}
}
