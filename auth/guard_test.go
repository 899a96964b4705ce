package auth

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
)

// A cron job with an old password locks out its own user, not another
// user on the same address; while locked no password is checked; a correct
// password works again once the cooling-off ends.
func TestLockout(t *testing.T) {
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	var lockouts []string
	g := &Guard{Failures: 5, Window: 10 * time.Minute, CoolOff: 10 * time.Minute, Now: clock,
		OnLockout: func(user, addr string, until time.Time) { lockouts = append(lockouts, user+"@"+addr) }}
	h, _ := bcrypt.GenerateFromPassword([]byte("cron-pw"), bcrypt.MinCost)
	h2, _ := bcrypt.GenerateFromPassword([]byte("tool-pw"), bcrypt.MinCost)
	u := NewUsers([]*config.Account{{Name: "cron", LocalUser: "cron", LocalPasswordHash: string(h)},
		{Name: "tool", LocalUser: "tool", LocalPasswordHash: string(h2)}})
	u.Guard = g
	u.CacheTTL = -1
	for i := range 5 {
		if _, err := u.CheckFrom("cron", fmt.Sprint("old-", i), "127.0.0.1"); err != ErrBadCredentials {
			t.Fatalf("attempt %d = %v", i, err)
		}
	}
	u.mu.Lock()
	checks := u.checks
	u.mu.Unlock()
	if _, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != ErrLockedOut {
		t.Errorf("after 5 failures = %v, want ErrLockedOut even with the right password", err)
	}
	u.mu.Lock()
	if u.checks != checks {
		t.Error("a password was checked while the user was locked out")
	}
	u.mu.Unlock()
	if a, err := u.CheckFrom("tool", "tool-pw", "127.0.0.1"); err != nil || a.Name != "tool" {
		t.Errorf("another user on the same address = %v, %v", a, err)
	}
	if len(lockouts) != 1 || lockouts[0] != "cron@127.0.0.1" || len(g.LockedOut()) != 1 {
		t.Errorf("lockouts = %v, locked = %v", lockouts, g.LockedOut())
	}
	mu.Lock()
	now = now.Add(11 * time.Minute)
	mu.Unlock()
	if a, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil || a.Name != "cron" {
		t.Errorf("after the cooling-off = %v, %v", a, err)
	}
}

// Attempts still in flight count: a burst cannot slip past the limit.
func TestLockoutCountsInFlight(t *testing.T) {
	g := &Guard{Failures: 3}
	for range 3 {
		if err := g.begin("x", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.begin("x", "127.0.0.1"); err != ErrLockedOut {
		t.Errorf("a fourth attempt while three are in flight = %v", err)
	}
}

// Names tried once do not stay in memory once their failures leave the
// window.
func TestGuardForgetsOldFailures(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := &Guard{Now: func() time.Time { return now }}
	for i := range 2000 {
		user := fmt.Sprintf("typo-%d", i)
		if g.begin(user, "127.0.0.1") == nil {
			g.end(user, "127.0.0.1", false)
		}
	}
	now = now.Add(11 * time.Minute)
	for i := range 2000 {
		user := fmt.Sprintf("later-%d", i)
		if g.begin(user, "127.0.0.1") == nil {
			g.end(user, "127.0.0.1", false)
		}
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.fails {
		if strings.Contains(k, "typo-") {
			t.Fatalf("%d keys kept; %q failed 11 minutes ago, outside the 10-minute window", len(g.fails), k)
		}
	}
}
