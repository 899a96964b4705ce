package localauth

import (
	"github.com/relayd/relayd/internal/safetext"

	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrLockedOut is returned for a local user with too many failed logins
// lately, unless the client presents the password that last succeeded for
// that user: other passwords are not even checked until the lockout ends.
var ErrLockedOut = errors.New("too many failed logins for this user; try again later")

// Guard defends local logins against guessing. Every local client is
// 127.0.0.1, so locking out an address would let one cron job with an old
// password lock out every tool on the host: Guard counts failed password
// checks per user (and per address and user, for listeners beyond loopback)
// in a sliding window, and after Failures of them locks that user out for
// CoolOff. A check still running is no failure, and identical attempts that
// share one check (Users) count once, so a burst of correct logins is never
// refused.
//
// While a user is locked out only the password that last succeeded for it
// gets in, so that a stranger's guesses cannot lock out the user's own
// clients; any other password, even a correct one relayd has not seen
// succeed (a new one, after a reload that changed the hash), is refused
// without a check until the lockout ends. Guard remembers that password as
// Users' cache keys it (a SHA-256 of user and password), with the hash it
// matched: a reload that changes the user's hash forgets it. A refused
// attempt for a user whose password is remembered waits, in that user's
// turn, as long as a password check takes: each answer tells whether the
// guess is that password, so guessing goes no faster than before the
// lockout.
//
// Safe for use from any goroutine.
type Guard struct {
	// Failures in Window lock a user out for CoolOff. Defaults 10, 10
	// minutes, 10 minutes.
	Failures        int
	Window, CoolOff time.Duration
	// PerAddress also refuses (address, user) pairs of non-loopback
	// clients after Failures (the daemon sets it: listeners may be
	// beyond loopback).
	PerAddress bool
	// Logger gets one line as a user is locked out and one, with the count
	// of attempts refused, when relayd next sees that the lockout is over
	// (an attempt for the user, relayd status, or now and then). Default
	// slog.Default().
	Logger *slog.Logger
	Now    func() time.Time

	mu     sync.Mutex
	fails  map[string][]time.Time // key → failures in the window
	locked map[string]*lockout    // user → the lockout in force
	good   map[string]goodLogin   // user → the password that last succeeded
	// took is how long the last password check took, which a refused
	// attempt for a user with a remembered password waits.
	took time.Duration
	// sweepAt is the size of fails at which the next failure drops what
	// has left the window for every key, so that names tried once (a typo,
	// a spray of made-up users) do not stay in memory for the daemon's
	// life.
	sweepAt int
}

// lockout is one episode of a user's lockout.
type lockout struct {
	since, until time.Time
	// refused and admitted count attempts in the episode: refused without
	// a check, and admitted with the password that last succeeded.
	refused, admitted int
}

// goodLogin is the password that last succeeded for a user: its key in
// Users' cache and the local_password_hash it matched.
type goodLogin struct {
	key  [32]byte
	hash string
}

// verdict is the Guard's answer to an attempt.
type verdict int

const (
	checkPassword verdict = iota // not locked out: check the password
	admitKnown                   // locked out, but the password last succeeded
	refuseLocked                 // locked out: refuse without a check
)

// Set changes the thresholds (a reload); zero values take the defaults.
// Failures already counted stay counted.
func (g *Guard) Set(failures int, window, coolOff time.Duration) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.Failures, g.Window, g.CoolOff = failures, window, coolOff
	g.defaults()
}

func (g *Guard) defaults() {
	if g.Failures <= 0 {
		g.Failures = 10
	}
	if g.Window <= 0 {
		g.Window = 10 * time.Minute
	}
	if g.CoolOff <= 0 {
		g.CoolOff = 10 * time.Minute
	}
	if g.Now == nil {
		g.Now = time.Now
	}
	if g.fails == nil {
		g.fails, g.locked, g.good = map[string][]time.Time{}, map[string]*lockout{}, map[string]goodLogin{}
	}
}

func (g *Guard) log() *slog.Logger {
	if g.Logger != nil {
		return g.Logger
	}
	return slog.Default()
}

func guardKeys(name, addr string, perAddr bool) []string {
	u := "u\x00" + name
	if perAddr && addr != "" && !loopback(addr) {
		return []string{u, "a\x00" + addr + "\x00" + name, sprayPrefix + addr}
	}
	return []string{u}
}

// sprayPrefix keys the failures of one address beyond loopback whatever
// the user: a password spray (a few guesses at each of many users) stays
// under every user's count, so an address is refused too after
// sprayFactor times Failures, for any user but with the password that
// last succeeded for that user.
const (
	sprayPrefix = "s\x00"
	sprayFactor = 3
)

// limit is how many failures of key in the window refuse it.
func (g *Guard) limit(key string) int {
	if strings.HasPrefix(key, sprayPrefix) {
		return sprayFactor * g.Failures
	}
	return g.Failures
}

// loopback reports whether addr is a loopback address: every local
// client shares it, so it says nothing about who guesses.
func loopback(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	return err == nil && ip.Unmap().IsLoopback()
}

// admit judges an attempt for the user name (lower case) from addr with
// key, the attempt's key in Users' cache; hash is the user's
// local_password_hash ("" for an unknown user). A refused attempt for a
// user whose password is remembered should wait hold, in that user's turn,
// before its answer.
func (g *Guard) admit(name, addr string, key [32]byte, hash string) (v verdict, hold time.Duration) {
	g.mu.Lock()
	g.defaults()
	now := g.Now()
	ended := g.expire(name, now)
	good, remembered := g.good[name]
	if remembered && good.hash != hash { // a reload changed (or removed) the hash
		delete(g.good, name)
		remembered = false
	}
	l := g.locked[name]
	locked := l != nil
	for _, k := range guardKeys(name, addr, g.PerAddress) {
		locked = locked || g.recent(k, now) >= g.limit(k)
	}
	switch {
	case !locked:
		v = checkPassword
	case remembered && subtle.ConstantTimeCompare(good.key[:], key[:]) == 1:
		v = admitKnown
		if l != nil {
			l.admitted++
		}
	default:
		v = refuseLocked
		if l != nil {
			l.refused++
		}
		if remembered {
			hold = g.took
		}
	}
	g.mu.Unlock()
	g.logEnded(name, ended)
	return v, hold
}

// checked records the outcome of a password check that admit allowed and
// that took took. ok with remember makes the password (key, matching
// hash) the one that last succeeded for the user. Users calls it before the
// user's next check may start, so that one check's failure counts for the
// next.
func (g *Guard) checked(name, addr string, key [32]byte, hash string, ok, remember bool, took time.Duration) {
	g.mu.Lock()
	g.defaults()
	now := g.Now()
	if took > 0 {
		g.took = took
	}
	if ok && remember {
		g.good[name] = goodLogin{key: key, hash: hash}
	}
	var started *lockout
	sprayed := false
	failures := g.Failures
	for _, k := range guardKeys(name, addr, g.PerAddress) {
		if ok {
			// A success does not forgive failures: they age out of
			// the window. Else a guesser who times guesses between a
			// busy poller's logins would never be locked out; the
			// poller's password gets in during a lockout anyway.
			continue
		}
		g.fails[k] = append(g.fails[k], now)
		if strings.HasPrefix(k, sprayPrefix) && g.recent(k, now) == g.limit(k) {
			sprayed = true
		}
		if strings.HasPrefix(k, "u\x00") && g.recent(k, now) >= g.Failures && g.locked[name] == nil {
			started = &lockout{since: now, until: now.Add(g.CoolOff)}
			g.locked[name] = started
			delete(g.fails, k) // a new episode starts after the cooling-off
		}
	}
	var ended []endedLockout
	if len(g.fails) >= g.sweepAt {
		ended = g.sweep(now)
	}
	g.mu.Unlock()
	for _, e := range ended {
		g.logEnded(e.name, e.l)
	}
	if sprayed {
		g.log().Warn("client address refused after repeated failed logins for several users (a password spray?): it gets in only with the password that last succeeded for a user, until its failures leave the window",
			"remote", addr, "failures", sprayFactor*failures, "window", g.Window.String())
	}
	if started != nil {
		g.log().Warn("local user locked out after repeated failed logins: until the lockout ends relayd refuses it without checking passwords, except the password that last succeeded for it; find the client with the wrong password",
			"user", name, "remote", addr, "failures", failures, "until", started.until.Format(time.RFC3339))
	}
}

// recent is how many failures of key are in the window. g.mu is held.
func (g *Guard) recent(key string, now time.Time) int {
	l := g.fails[key]
	i := 0
	for i < len(l) && now.Sub(l[i]) > g.Window {
		i++
	}
	if i > 0 {
		l = l[i:]
		if len(l) == 0 {
			delete(g.fails, key)
		} else {
			g.fails[key] = l
		}
	}
	return len(l)
}

// expire ends the user's lockout if its time is up, and returns it to be
// logged (after g.mu is released). g.mu is held.
func (g *Guard) expire(name string, now time.Time) *lockout {
	l := g.locked[name]
	if l == nil || now.Before(l.until) {
		return nil
	}
	delete(g.locked, name)
	return l
}

type endedLockout struct {
	name string
	l    *lockout
}

// sweep drops failures outside the window and ends lockouts whose time is
// up, returning them to be logged. g.mu is held.
func (g *Guard) sweep(now time.Time) []endedLockout {
	for k := range g.fails {
		g.recent(k, now)
	}
	var ended []endedLockout
	for name := range g.locked {
		if l := g.expire(name, now); l != nil {
			ended = append(ended, endedLockout{name, l})
		}
	}
	g.sweepAt = max(1024, 2*len(g.fails))
	return ended
}

// logEnded logs the end of a lockout episode with its counts, if l is one.
func (g *Guard) logEnded(name string, l *lockout) {
	if l == nil {
		return
	}
	level := slog.LevelInfo
	if l.refused > 0 {
		level = slog.LevelWarn
	}
	g.log().Log(context.Background(), level, "local user's lockout ended",
		"user", name, "refused", l.refused, "admitted", l.admitted,
		"since", l.since.Format(time.RFC3339), "until", l.until.Format(time.RFC3339))
}

// Locked is a user refused for now.
type Locked struct {
	User  string    `json:"user"`
	Until time.Time `json:"until"`
}

// LockedOut lists the users refused now.
func (g *Guard) LockedOut() []Locked {
	g.mu.Lock()
	g.defaults()
	now := g.Now()
	var l []Locked
	var ended []endedLockout
	for name, lo := range g.locked {
		if now.Before(lo.until) {
			// The name is what a client sent: shown on one line, its
			// control characters escaped (a terminal, the console).
			l = append(l, Locked{User: safetext.Clip(name, 200), Until: lo.until})
		} else if e := g.expire(name, now); e != nil {
			ended = append(ended, endedLockout{name, e})
		}
	}
	g.mu.Unlock()
	for _, e := range ended {
		g.logEnded(e.name, e.l)
	}
	sort.Slice(l, func(i, j int) bool { return l[i].User < l[j].User })
	return l
}
