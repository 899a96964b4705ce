package auth

import (
	"errors"
	"sort"
	"strings"
	"sync"
	"time"
)

// ErrLockedOut is returned for a local user with too many failed logins
// lately: the password is not even checked until the cooling-off ends.
var ErrLockedOut = errors.New("too many failed logins for this user; try again later")

// Guard defends local logins against guessing. Every local client is
// 127.0.0.1, so locking out an address would let one cron job with an old
// password lock out every tool on the host: Guard counts failures per user
// (and per address and user, for listeners beyond loopback) in a sliding
// window, attempts still in flight included, and after Failures of them
// refuses that user for CoolOff. Safe for use from any goroutine.
type Guard struct {
	// Failures in Window lock a user out for CoolOff. Defaults 10, 10
	// minutes, 10 minutes.
	Failures        int
	Window, CoolOff time.Duration
	// PerAddress also locks (address, user) pairs of non-loopback
	// clients after Failures.
	PerAddress bool
	// OnLockout, when set, is called once per episode, as a user is locked.
	OnLockout func(user, addr string, until time.Time)
	Now       func() time.Time

	mu       sync.Mutex
	fails    map[string][]time.Time // key → failures in the window
	inflight map[string]int
	locked   map[string]time.Time // user → until
	// sweepAt is the size of fails at which the next end drops what has
	// left the window for every key, so that names tried once (a typo, a
	// spray of made-up users) do not stay in memory for the daemon's life.
	sweepAt int
}

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
		g.fails, g.inflight, g.locked = map[string][]time.Time{}, map[string]int{}, map[string]time.Time{}
	}
}

func guardKeys(user, addr string, perAddr bool) []string {
	u := "u\x00" + strings.ToLower(user)
	if perAddr && addr != "" {
		return []string{u, "a\x00" + addr + "\x00" + strings.ToLower(user)}
	}
	return []string{u}
}

// begin admits an attempt for user from addr, or refuses it with
// ErrLockedOut. An admitted attempt must be ended with end.
func (g *Guard) begin(user, addr string) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.defaults()
	now := g.Now()
	name := strings.ToLower(user)
	if until, ok := g.locked[name]; ok {
		if now.Before(until) {
			return ErrLockedOut
		}
		delete(g.locked, name)
	}
	for _, k := range guardKeys(user, addr, g.PerAddress) {
		if g.recent(k, now)+g.inflight[k] >= g.Failures {
			return ErrLockedOut
		}
	}
	for _, k := range guardKeys(user, addr, g.PerAddress) {
		g.inflight[k]++
	}
	return nil
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

// end records how an admitted attempt ended.
func (g *Guard) end(user, addr string, ok bool) {
	g.mu.Lock()
	now := g.Now()
	var lockedNow time.Time
	for _, k := range guardKeys(user, addr, g.PerAddress) {
		g.inflight[k]--
		if g.inflight[k] <= 0 {
			delete(g.inflight, k)
		}
		if ok {
			delete(g.fails, k)
			continue
		}
		g.fails[k] = append(g.fails[k], now)
		name := strings.ToLower(user)
		if strings.HasPrefix(k, "u\x00") && g.recent(k, now) >= g.Failures {
			if _, already := g.locked[name]; !already {
				lockedNow = now.Add(g.CoolOff)
				g.locked[name] = lockedNow
				delete(g.fails, k) // a new episode starts after the cooling-off
			}
		}
	}
	if len(g.fails) >= g.sweepAt {
		g.sweep(now)
	}
	fn := g.OnLockout
	g.mu.Unlock()
	if !lockedNow.IsZero() && fn != nil {
		fn(user, addr, lockedNow)
	}
}

// sweep drops failures outside the window and ended lockouts. g.mu is
// held.
func (g *Guard) sweep(now time.Time) {
	for k := range g.fails {
		g.recent(k, now)
	}
	for u, until := range g.locked {
		if !now.Before(until) {
			delete(g.locked, u)
		}
	}
	g.sweepAt = max(1024, 2*len(g.fails))
}

// Locked is a user refused for now.
type Locked struct {
	User  string    `json:"user"`
	Until time.Time `json:"until"`
}

// LockedOut lists the users refused now.
func (g *Guard) LockedOut() []Locked {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.defaults()
	now := g.Now()
	var l []Locked
	for u, until := range g.locked {
		if now.Before(until) {
			l = append(l, Locked{User: u, Until: until})
		}
	}
	sort.Slice(l, func(i, j int) bool { return l[i].User < l[j].User })
	return l
}
