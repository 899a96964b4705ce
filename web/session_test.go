package web

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) add(d time.Duration)     { c.t = c.t.Add(d) }
func newClock() *clock                   { return &clock{t: time.Date(2026, 12, 31, 3, 0, 0, 0, time.UTC)} }
func newTestSessions(c *clock) *sessions { return newSessions(30*time.Minute, 10*time.Minute, c.now) }

func TestLinkWorksOnceWithinItsTime(t *testing.T) {
	c := newClock()
	s := newTestSessions(c)
	token, expires := s.issue(Admin, "uid 0")
	if want := c.t.Add(10 * time.Minute); !expires.Equal(want) {
		t.Errorf("expires %v, want %v", expires, want)
	}
	c.add(9*time.Minute + 59*time.Second)
	ss, err := s.redeem(token)
	if err != nil || ss.role != Admin || ss.origin != "uid 0" {
		t.Fatalf("redeem() = %+v, %v; want an admin session", ss, err)
	}
	if _, err := s.redeem(token); err == nil {
		t.Errorf("a link redeemed twice")
	}
	late, _ := s.issue(Reader, "uid 1000")
	c.add(10 * time.Minute)
	if _, err := s.redeem(late); err == nil {
		t.Errorf("a link redeemed after 10 minutes")
	}
}

func TestSessionEndsWhenIdle(t *testing.T) {
	c := newClock()
	s := newTestSessions(c)
	token, _ := s.issue(Reader, "uid 1000")
	ss, err := s.redeem(token)
	if err != nil {
		t.Fatal(err)
	}
	// Each request moves the idle expiry on...
	for range 5 {
		c.add(20 * time.Minute)
		if s.get(ss.id, true) == nil {
			t.Fatalf("the session ended after 20 minutes idle, want 30")
		}
	}
	// ...but the live updates do not.
	c.add(29 * time.Minute)
	if s.get(ss.id, false) == nil || !s.alive(ss) {
		t.Fatalf("the session ended early")
	}
	c.add(time.Minute)
	if s.get(ss.id, true) != nil || s.alive(ss) {
		t.Errorf("the session outlived 30 idle minutes")
	}
	if s.get("", true) != nil || s.get("made-up", true) != nil {
		t.Errorf("a made-up cookie found a session")
	}
}

// Links and sessions nobody uses cannot grow without bound.
func TestSessionsAreBounded(t *testing.T) {
	c := newClock()
	s := newTestSessions(c)
	var first string
	for i := range 3 * maxLinks {
		token, _ := s.issue(Reader, "x")
		if i == 0 {
			first = token
		}
		c.add(time.Millisecond)
	}
	if len(s.links) > maxLinks {
		t.Errorf("%d links kept, want at most %d", len(s.links), maxLinks)
	}
	if _, err := s.redeem(first); err == nil {
		t.Errorf("the oldest link survived the cap")
	}
	token, _ := s.issue(Admin, "root")
	admin, err := s.redeem(token)
	if err != nil {
		t.Fatal(err)
	}
	for range 3 * maxSessions {
		token, _ := s.issue(Reader, "x")
		if _, err := s.redeem(token); err != nil {
			t.Fatal(err)
		}
		c.add(time.Millisecond)
	}
	if len(s.byID) > 2*maxSessions {
		t.Errorf("%d sessions kept, want at most %d", len(s.byID), 2*maxSessions)
	}
	if s.get(admin.id, false) == nil {
		t.Errorf("readers pushed the admin's session out")
	}
	// A session ends 12 hours after it started, however busy.
	for range 12 {
		c.add(time.Hour - time.Millisecond)
		s.get(admin.id, true)
	}
	if s.get(admin.id, true) != nil {
		t.Errorf("a session outlived 12 hours")
	}
}

func TestSignInsAreBoundedAndExpire(t *testing.T) {
	c := newClock()
	si := newSignins(10*time.Minute, c.now)
	owner := &session{}
	for i := range maxAttempts {
		if err := si.add(&attempt{id: newToken(), owner: owner, account: fmt.Sprint(i), method: methodPaste, created: c.now()}); err != nil {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	if err := si.add(&attempt{id: newToken(), owner: owner, account: "one more", method: methodPaste, created: c.now()}); err == nil {
		t.Fatalf("more than %d sign-ins at once", maxAttempts)
	}
	// The same session and account: the new one replaces the old.
	if err := si.add(&attempt{id: newToken(), owner: owner, account: "0", method: methodPaste, created: c.now()}); err != nil {
		t.Fatalf("a new sign-in of the same session and account: %v", err)
	}
	c.add(10 * time.Minute)
	if err := si.add(&attempt{id: newToken(), owner: owner, account: "later", method: methodPaste, created: c.now()}); err != nil {
		t.Errorf("expired sign-ins still count: %v", err)
	}
}

// The link names the host the sign-in comes back to, so that the session
// cookie it sets is the one the callback's page finds.
func TestBaseURL(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{Addr: "127.0.0.1:8025"}, "http://127.0.0.1:8025"},
		{Options{Addr: "127.0.0.1:8025", RedirectURI: "http://localhost:8025/oauth/callback"}, "http://localhost:8025"},
		{Options{Addr: "[::1]:8025"}, "http://[::1]:8025"},
	} {
		if got := New(c.o).BaseURL(); got != c.want {
			t.Errorf("BaseURL() of %+v = %q, want %q", c.o, got, c.want)
		}
	}
}

// One client address beyond loopback gets its share of the connections;
// loopback (every user of an ssh -L tunnel) only the total.
func TestLimitPerAddress(t *testing.T) {
	l := newLimitListener(nil, 10, 2, slog.New(slog.DiscardHandler))
	far := netip.MustParseAddr("192.0.2.7")
	if !l.take(far) || !l.take(far) || l.take(far) {
		t.Errorf("a remote address: want 2 connections, not a third")
	}
	if !l.take(netip.MustParseAddr("192.0.2.8")) {
		t.Errorf("another remote address was refused")
	}
	lo := netip.MustParseAddr("127.0.0.1")
	for i := range 7 {
		if !l.take(lo) {
			t.Fatalf("loopback connection %d refused below the total", i)
		}
	}
	if l.take(lo) {
		t.Errorf("the total cap does not hold")
	}
	l.release(far)
	if !l.take(far) {
		t.Errorf("a released place was not given back")
	}
}
