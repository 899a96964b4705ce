package localauth

import (
	"crypto/sha256"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/testkit"
)

// guarded is a Users of two local users, cron (cron-pw) and tool
// (tool-pw), behind a Guard with a fake clock and a captured log.
type guarded struct {
	u    *Users
	g    *Guard
	logs *testkit.SyncBuffer

	mu  sync.Mutex
	now time.Time
}

func newGuarded(t *testing.T, failures int) *guarded {
	t.Helper()
	gd := &guarded{logs: &testkit.SyncBuffer{}, now: time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)}
	gd.g = &Guard{Failures: failures, Window: 10 * time.Minute, CoolOff: 10 * time.Minute, Now: gd.clock,
		Logger: slog.New(slog.NewTextHandler(gd.logs, nil))}
	gd.u = gd.users(t, "cron-pw")
	return gd
}

// users is a Users of the same guard (as after a reload) in which cron's
// password is cronPassword.
func (gd *guarded) users(t *testing.T, cronPassword string) *Users {
	t.Helper()
	h, _ := bcrypt.GenerateFromPassword([]byte(cronPassword), bcrypt.MinCost)
	h2, _ := bcrypt.GenerateFromPassword([]byte("tool-pw"), bcrypt.MinCost)
	u := NewUsers([]*config.Account{{Name: "cron", LocalUser: "cron", LocalPasswordHash: string(h)},
		{Name: "tool", LocalUser: "tool", LocalPasswordHash: string(h2)}})
	u.Guard, u.Now = gd.g, gd.clock
	return u
}

func (gd *guarded) clock() time.Time {
	gd.mu.Lock()
	defer gd.mu.Unlock()
	return gd.now
}

func (gd *guarded) pass(d time.Duration) {
	gd.mu.Lock()
	gd.now = gd.now.Add(d)
	gd.mu.Unlock()
}

func (gd *guarded) checks() int {
	gd.u.mu.Lock()
	defer gd.u.mu.Unlock()
	return gd.u.checks
}

// A cron job with an old password locks out its own user, not another
// user on the same address; while locked no password is checked, and the
// right one is refused if relayd never saw it succeed; it works again once
// the cooling-off ends.
func TestLockout(t *testing.T) {
	gd := newGuarded(t, 5)
	u := gd.u
	for i := range 5 {
		if _, err := u.CheckFrom("cron", fmt.Sprint("old-", i), "127.0.0.1"); err != ErrBadCredentials {
			t.Fatalf("attempt %d = %v", i, err)
		}
	}
	checks := gd.checks()
	if _, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != ErrLockedOut {
		t.Errorf("after 5 failures = %v, want ErrLockedOut for a right password never seen to succeed", err)
	}
	if gd.checks() != checks {
		t.Error("a password was checked while the user was locked out")
	}
	if a, err := u.CheckFrom("tool", "tool-pw", "127.0.0.1"); err != nil || a.Name != "tool" {
		t.Errorf("another user on the same address = %v, %v", a, err)
	}
	logs := gd.logs.String()
	if strings.Count(logs, "locked out after repeated failed logins") != 1 || !strings.Contains(logs, "user=cron remote=127.0.0.1") ||
		len(gd.g.LockedOut()) != 1 {
		t.Errorf("locked = %v, log:\n%s", gd.g.LockedOut(), logs)
	}
	gd.pass(11 * time.Minute)
	if a, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil || a.Name != "cron" {
		t.Errorf("after the cooling-off = %v, %v", a, err)
	}
}

// While a user is locked out, the password that last succeeded for it gets
// in without a check, however long ago it succeeded; a wrong one is
// refused, and so is a right one relayd has not seen succeed (a reload
// changed the hash) until the lockout ends. The end of the episode is
// logged with the count of attempts refused.
func TestLockoutAdmitsThePasswordThatLastSucceeded(t *testing.T) {
	gd := newGuarded(t, 10)
	u := gd.u
	if _, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil {
		t.Fatal(err)
	}
	gd.pass(time.Hour) // long past the cache's TTL
	for i := range 12 {
		_, err := u.CheckFrom("cron", fmt.Sprint("guess-", i), "127.0.0.1")
		want := ErrBadCredentials
		if i >= 10 {
			want = ErrLockedOut
		}
		if err != want {
			t.Fatalf("wrong password %d = %v, want %v", i+1, err, want)
		}
	}
	checks := gd.checks()
	if a, err := u.CheckFrom("CRON", "cron-pw", "127.0.0.1"); err != nil || a.Name != "cron" {
		t.Errorf("the password that last succeeded, while locked out = %v, %v", a, err)
	}
	if _, err := u.CheckFrom("cron", "guess-12", "127.0.0.1"); err != ErrLockedOut {
		t.Errorf("a wrong password while locked out = %v, want ErrLockedOut", err)
	}
	if gd.checks() != checks {
		t.Error("a password was checked while the user was locked out")
	}
	if l := gd.g.LockedOut(); len(l) != 1 || l[0].User != "cron" {
		t.Errorf("locked out = %+v, want cron still", l)
	}

	// A reload sets a new password: relayd has not seen it succeed.
	u2 := gd.users(t, "cron-pw2")
	if _, err := u2.CheckFrom("cron", "cron-pw2", "127.0.0.1"); err != ErrLockedOut {
		t.Errorf("a new password never seen to succeed, while locked out = %v, want ErrLockedOut", err)
	}
	if _, err := u2.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != ErrLockedOut {
		t.Errorf("the password of the replaced hash, while locked out = %v, want ErrLockedOut", err)
	}
	if strings.Contains(gd.logs.String(), "lockout ended") {
		t.Errorf("the end of the lockout logged before its end:\n%s", gd.logs.String())
	}
	gd.pass(10 * time.Minute)
	if a, err := u2.CheckFrom("cron", "cron-pw2", "127.0.0.1"); err != nil || a.Name != "cron" {
		t.Errorf("the new password once the lockout ended = %v, %v", a, err)
	}
	logs := gd.logs.String()
	if n := strings.Count(logs, "lockout ended"); n != 1 || !strings.Contains(logs, "user=cron refused=5 admitted=1") {
		t.Errorf("want one line for the end of the lockout with 5 attempts refused and 1 admitted, log:\n%s", logs)
	}
}

// 50 simultaneous attempts with the right password, arriving while their
// shared check runs, all get in even if one more failure would lock the
// user out: a check in flight is no failure.
func TestBurstOfRightPasswordsAdmitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gd := newGuarded(t, 10)
		u := gd.u
		for i := range 9 {
			if _, err := u.CheckFrom("cron", fmt.Sprint("old-", i), "127.0.0.1"); err != ErrBadCredentials {
				t.Fatalf("attempt %d = %v", i, err)
			}
		}
		if n, err := count(burst(u, "cron", "cron-pw", 50), nil); n != 50 {
			t.Errorf("%d of 50 attempts admitted; another got %v", n, err)
		}
		if l := gd.g.LockedOut(); len(l) != 0 {
			t.Errorf("locked out = %+v", l)
		}
	})
}

// 50 simultaneous attempts with the same wrong password (one client
// restarted with an old one) share one check and count as one failure.
func TestIdenticalAttemptsCountOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gd := newGuarded(t, 3)
		u := gd.u
		if n, err := count(burst(u, "cron", "stale-pw", 50), ErrBadCredentials); n != 50 {
			t.Errorf("%d of 50 attempts got ErrBadCredentials; another got %v", n, err)
		}
		if n := gd.checks(); n != 1 {
			t.Errorf("%d checks, want 1", n)
		}
		gd.g.mu.Lock()
		failures := len(gd.g.fails["u\x00cron"])
		gd.g.mu.Unlock()
		if failures != 1 {
			t.Errorf("%d failures counted, want 1", failures)
		}
		if _, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil {
			t.Errorf("the right password afterwards = %v", err)
		}
	})
}

// burst makes n simultaneous attempts, all of which arrive while the
// first one's check is still waiting for a CPU. Run it in a synctest
// bubble.
func burst(u *Users, user, password string, n int) []error {
	for range cap(u.pool) { // the CPUs are busy
		u.pool <- struct{}{}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = u.CheckFrom(user, password, "127.0.0.1") })
	}
	synctest.Wait() // every attempt is waiting or answered
	for range cap(u.pool) {
		<-u.pool
	}
	wg.Wait()
	return errs
}

// count is how many of errs are want, and another error if any.
func count(errs []error, want error) (n int, other error) {
	for _, err := range errs {
		if err == want {
			n++
		} else {
			other = err
		}
	}
	return n, other
}

// While a user whose password relayd remembers is locked out, each answer
// to a guess tells whether it is that password: refused guesses take the
// user's turn one at a time, each as long as a password check, so guessing
// goes no faster than before the lockout, while the remembered password
// gets in at once. A user with no remembered password is refused at once.
func TestRefusedGuessesTakeTurns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		gd := newGuarded(t, 3)
		u, g := gd.u, gd.g
		if _, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil {
			t.Fatal(err)
		}
		for i := range 3 {
			u.CheckFrom("cron", fmt.Sprint("guess-", i), "127.0.0.1")
		}
		g.mu.Lock()
		g.took = time.Second // a check takes a second (synctest's clock stands still during bcrypt)
		g.mu.Unlock()
		start := time.Now()
		var wg sync.WaitGroup
		for i := range 5 {
			wg.Go(func() {
				if _, err := u.CheckFrom("cron", fmt.Sprint("guess-more-", i), "127.0.0.1"); err != ErrLockedOut {
					t.Errorf("guess while locked out = %v", err)
				}
			})
		}
		synctest.Wait()
		if _, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil {
			t.Errorf("the password that last succeeded, while guesses wait = %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("the password that last succeeded waited %v", d)
		}
		wg.Wait()
		if d := time.Since(start); d != 5*time.Second {
			t.Errorf("5 refused guesses took %v, want 5s: one check's time each, one at a time", d)
		}

		// tool's password was never seen to succeed: its refusals tell
		// nothing and come at once.
		for i := range 3 {
			u.CheckFrom("tool", fmt.Sprint("guess-", i), "127.0.0.1")
		}
		start = time.Now()
		if _, err := u.CheckFrom("tool", "guess-3", "127.0.0.1"); err != ErrLockedOut {
			t.Errorf("guess for tool while locked out = %v", err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("a refusal for a user with no remembered password waited %v", d)
		}
	})
}

// fail records a failed check for user, as Users does, unless the guard
// refuses it first.
func fail(g *Guard, user string) {
	key := sha256.Sum256([]byte(user + "\x00wrong"))
	if v, _ := g.admit(user, "127.0.0.1", key, ""); v == checkPassword {
		g.checked(user, "127.0.0.1", key, "", false, false, 0)
	}
}

// Names tried once do not stay in memory once their failures leave the
// window.
func TestGuardForgetsOldFailures(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	g := &Guard{Now: func() time.Time { return now }, Logger: slog.New(slog.DiscardHandler)}
	for i := range 2000 {
		fail(g, fmt.Sprintf("typo-%d", i))
	}
	now = now.Add(11 * time.Minute)
	for i := range 2000 {
		fail(g, fmt.Sprintf("later-%d", i))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for k := range g.fails {
		if strings.Contains(k, "typo-") {
			t.Fatalf("%d keys kept; %q failed 11 minutes ago, outside the 10-minute window", len(g.fails), k)
		}
	}
}

// A success does not forgive failures: a guesser who times guesses between
// a busy poller's successful logins is locked out all the same, and the
// poller keeps getting in.
func TestSuccessesDoNotResetGuesses(t *testing.T) {
	gd := newGuarded(t, 4)
	u := gd.u
	for i := range 4 {
		if _, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil {
			t.Fatalf("poller login %d = %v", i, err)
		}
		if _, err := u.CheckFrom("cron", fmt.Sprint("guess-", i), "127.0.0.1"); err != ErrBadCredentials {
			t.Fatalf("guess %d = %v", i, err)
		}
	}
	if len(gd.g.LockedOut()) != 1 {
		t.Fatalf("4 guesses between 4 good logins: locked %v, want cron locked out", gd.g.LockedOut())
	}
	if _, err := u.CheckFrom("cron", "guess-9", "127.0.0.1"); err != ErrLockedOut {
		t.Errorf("a guess during the lockout = %v, want ErrLockedOut", err)
	}
	if a, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil || a.Name != "cron" {
		t.Errorf("the poller during the lockout = %v, %v; want admitted", a, err)
	}
}

// A password spray from one address beyond loopback (a few guesses at each
// of many users, under every user's count) gets the address refused after
// three times Failures, for every user; a user's own client there still
// gets in with the password that last succeeded, and loopback, which every
// local client shares, is never refused as an address.
func TestPasswordSprayRefusesTheAddress(t *testing.T) {
	gd := newGuarded(t, 5)
	gd.g.PerAddress = true
	u := gd.u
	if _, err := u.CheckFrom("tool", "tool-pw", "192.0.2.9"); err != nil {
		t.Fatal(err)
	}
	for i := range 15 { // 15 made-up users, one guess each: no user's count grows
		if _, err := u.CheckFrom(fmt.Sprint("user", i), "guess", "192.0.2.9"); err != ErrBadCredentials {
			t.Fatalf("guess %d = %v", i, err)
		}
	}
	checks := gd.checks()
	if _, err := u.CheckFrom("cron", "cron-pw", "192.0.2.9"); err != ErrLockedOut {
		t.Errorf("the spraying address, a right password never seen to succeed = %v, want ErrLockedOut", err)
	}
	if gd.checks() != checks {
		t.Error("a password was checked for the refused address")
	}
	if a, err := u.CheckFrom("tool", "tool-pw", "192.0.2.9"); err != nil || a.Name != "tool" {
		t.Errorf("the password that last succeeded, from the spraying address = %v, %v", a, err)
	}
	if a, err := u.CheckFrom("cron", "cron-pw", "192.0.2.10"); err != nil || a.Name != "cron" {
		t.Errorf("another address = %v, %v", a, err)
	}
	if !strings.Contains(gd.logs.String(), "password spray") {
		t.Errorf("the refused address was not logged:\n%s", gd.logs.String())
	}
	// Loopback: the same spray refuses no address.
	for i := range 15 {
		u.CheckFrom(fmt.Sprint("local", i), "guess", "127.0.0.1")
	}
	if a, err := u.CheckFrom("cron", "cron-pw", "127.0.0.1"); err != nil || a.Name != "cron" {
		t.Errorf("loopback after a spray = %v, %v", a, err)
	}
	// The address's failures leave the window.
	gd.pass(11 * time.Minute)
	if a, err := u.CheckFrom("cron", "cron-pw", "192.0.2.9"); err != nil || a.Name != "cron" {
		t.Errorf("the spraying address after the window = %v, %v", a, err)
	}
}
