package localauth

import (
	"crypto/sha256"
	"errors"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
)

// ErrBadCredentials is returned by Users.Check for an unknown user or a
// wrong password. Both look the same to the client.
var ErrBadCredentials = errors.New("invalid user name or password")

// Users checks the credentials legacy clients send against the accounts'
// local_password_hash (bcrypt). A successful check is cached in memory for
// CacheTTL, keyed by a SHA-256 of user and password, so a busy client does
// not pay bcrypt's cost on every login. With a Guard, the key of the
// password that last succeeded for each user is kept beyond CacheTTL, for
// as long as the user's hash stays the same, to let that password in
// during a lockout.
//
// bcrypt checks are bounded, so that a flood of attempts cannot delay
// other users' logins: at most one check per local user is in flight
// (identical attempts share its outcome; others wait their turn), unknown
// users share one such lane, and all checks share a pool as large as the
// machine has CPUs. Safe for use from any goroutine.
type Users struct {
	// CacheTTL is how long a verified login is remembered. Default 5 minutes;
	// negative disables the cache, and the Guard then remembers no
	// password either.
	CacheTTL time.Duration
	Now      func() time.Time
	// Guard, when set, refuses users with too many recent failures
	// (CheckFrom); it may be shared by the Users of successive reloads,
	// and should be, since it remembers what it has seen.
	Guard *Guard

	byUser map[string]*config.Account
	// dummy is a hash of the same cost as the accounts', checked for an
	// unknown user so that the answer takes as long.
	dummy []byte

	mu     sync.Mutex
	cache  map[[32]byte]cacheEntry
	lanes  map[string]chan struct{} // per local user: one check at a time
	shared map[[32]byte]*check      // checks in flight, by user and password
	pool   chan struct{}            // bcrypt checks running
	// checks counts bcrypt comparisons; running and maxRunning count
	// those in flight per lane, for tests.
	checks     int
	running    map[string]int
	maxRunning int
}

type cacheEntry struct {
	acct    *config.Account
	expires time.Time
}

// check is a bcrypt check in flight that identical attempts wait for.
type check struct {
	done chan struct{}
	acct *config.Account
	err  error
}

// NewUsers indexes accounts by their local user name (case-insensitively).
func NewUsers(accounts []*config.Account) *Users {
	u := &Users{byUser: map[string]*config.Account{}, cache: map[[32]byte]cacheEntry{},
		lanes: map[string]chan struct{}{}, shared: map[[32]byte]*check{}, running: map[string]int{},
		pool: make(chan struct{}, max(runtime.NumCPU(), 1))}
	cost := 0
	for _, a := range accounts {
		u.byUser[strings.ToLower(a.LocalUser)] = a
		if c, err := bcrypt.Cost([]byte(a.LocalPasswordHash)); err == nil && c > cost {
			cost = c
		}
	}
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	u.dummy = dummyHash(cost)
	return u
}

var (
	dummyMu     sync.Mutex
	dummyByCost = map[int][]byte{}
)

// dummyHash is a bcrypt hash of the given cost, made on first use (at
// start-up it would cost every relayd command a hash).
func dummyHash(cost int) []byte {
	dummyMu.Lock()
	defer dummyMu.Unlock()
	if h, ok := dummyByCost[cost]; ok {
		return h
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("relayd-dummy"), cost)
	dummyByCost[cost] = h
	return h
}

// CheckFrom is Check for a client at addr, through the Guard: a user with
// too many recent failures gets ErrLockedOut without a password check,
// unless the password is the one that last succeeded for that user.
// Identical attempts that share one check count once; see Guard.
func (u *Users) CheckFrom(user, password, addr string) (*config.Account, error) {
	return u.check(user, password, addr, u.Guard)
}

// Check returns the account whose local credentials match. It does not ask
// the Guard.
func (u *Users) Check(user, password string) (*config.Account, error) {
	return u.check(user, password, "", nil)
}

func (u *Users) check(user, password, addr string, g *Guard) (*config.Account, error) {
	now := time.Now
	if u.Now != nil {
		now = u.Now
	}
	ttl := u.CacheTTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	name := strings.ToLower(user)
	key := sha256.Sum256([]byte(name + "\x00" + password))
	a := u.byUser[name]
	hash := ""
	if a != nil {
		hash = a.LocalPasswordHash
	}
	if g != nil {
		switch v, hold := g.admit(name, addr, key, hash); v {
		case admitKnown:
			return a, nil
		case refuseLocked:
			if hold > 0 {
				l := u.lane(name) // only a local user's password is remembered
				l <- struct{}{}
				time.Sleep(hold)
				<-l
			}
			return nil, ErrLockedOut
		}
	}
	u.mu.Lock()
	if e, ok := u.cache[key]; ok && ttl > 0 && now().Before(e.expires) {
		u.mu.Unlock()
		if g != nil {
			g.checked(name, addr, key, hash, true, true, 0)
		}
		return e.acct, nil
	}
	if c := u.shared[key]; c != nil {
		// The same attempt is being checked: share its outcome, and
		// count once.
		u.mu.Unlock()
		<-c.done
		return c.acct, c.err
	}
	c := &check{done: make(chan struct{})}
	u.shared[key] = c
	u.mu.Unlock()
	c.acct, c.err = u.checkInLane(name, password, addr, key, a, g, ttl > 0)

	u.mu.Lock()
	delete(u.shared, key)
	if c.err == nil && ttl > 0 {
		for k, e := range u.cache { // keep the cache small: drop expired entries
			if !now().Before(e.expires) {
				delete(u.cache, k)
			}
		}
		u.cache[key] = cacheEntry{acct: a, expires: now().Add(ttl)}
	}
	u.mu.Unlock()
	close(c.done)
	return c.acct, c.err
}

// lane is the turn for checks of a local user, or of all unknown users
// (""): one check at a time in each.
func (u *Users) lane(name string) chan struct{} {
	u.mu.Lock()
	defer u.mu.Unlock()
	l := u.lanes[name]
	if l == nil {
		l = make(chan struct{}, 1)
		u.lanes[name] = l
	}
	return l
}

// checkInLane waits for the user's turn and a CPU, asks the Guard again (a
// lockout may have begun meanwhile), checks the password with bcrypt and
// tells the Guard the outcome before the next check for the user starts.
func (u *Users) checkInLane(name, password, addr string, key [32]byte, a *config.Account, g *Guard, remember bool) (*config.Account, error) {
	lane, hash, bhash := name, "", u.dummy
	if a != nil {
		hash = a.LocalPasswordHash
		bhash = []byte(hash)
	} else {
		lane = "" // unknown users share one lane
	}
	l := u.lane(lane)
	l <- struct{}{} // this user's turn
	defer func() { <-l }()
	if g != nil {
		switch v, hold := g.admit(name, addr, key, hash); v {
		case admitKnown:
			return a, nil
		case refuseLocked:
			time.Sleep(hold)
			return nil, ErrLockedOut
		}
	}
	u.pool <- struct{}{} // a CPU for bcrypt
	u.mu.Lock()
	u.running[lane]++
	u.maxRunning = max(u.maxRunning, u.running[lane])
	u.mu.Unlock()
	start := time.Now()
	ok := bcrypt.CompareHashAndPassword(bhash, []byte(password)) == nil && a != nil
	took := time.Since(start)
	u.mu.Lock()
	u.running[lane]-- // before the lane is free, or the count overlaps the next check
	u.checks++
	u.mu.Unlock()
	<-u.pool
	if g != nil {
		g.checked(name, addr, key, hash, ok, remember, took)
	}
	if !ok {
		return nil, ErrBadCredentials
	}
	return a, nil
}

// HashPassword returns the bcrypt hash to put in local_password_hash.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	return string(h), err
}
