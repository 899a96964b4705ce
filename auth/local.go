package auth

import (
	"crypto/sha256"
	"errors"
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
// CacheTTL, keyed by a SHA-256 of user and password, so a busy client does not
// pay bcrypt's cost on every login. Safe for use from any goroutine.
type Users struct {
	// CacheTTL is how long a verified login is remembered. Default 5 minutes;
	// negative disables the cache.
	CacheTTL time.Duration
	Now      func() time.Time

	byUser map[string]*config.Account

	mu    sync.Mutex
	cache map[[32]byte]cacheEntry
}

type cacheEntry struct {
	acct    *config.Account
	expires time.Time
}

// NewUsers indexes accounts by their local user name (case-insensitively).
func NewUsers(accounts []*config.Account) *Users {
	u := &Users{byUser: map[string]*config.Account{}, cache: map[[32]byte]cacheEntry{}}
	for _, a := range accounts {
		u.byUser[strings.ToLower(a.LocalUser)] = a
	}
	return u
}

// dummyHash keeps the time of a login for an unknown user the same as for a
// known one.
// Made on first use: at start-up it would cost every relayd command a
// bcrypt hash.
var dummyHash = sync.OnceValue(func() []byte {
	h, _ := bcrypt.GenerateFromPassword([]byte("relayd-dummy"), bcrypt.DefaultCost)
	return h
})

// Check returns the account whose local credentials match.
func (u *Users) Check(user, password string) (*config.Account, error) {
	now := time.Now
	if u.Now != nil {
		now = u.Now
	}
	ttl := u.CacheTTL
	if ttl == 0 {
		ttl = 5 * time.Minute
	}
	key := sha256.Sum256([]byte(strings.ToLower(user) + "\x00" + password))
	if ttl > 0 {
		u.mu.Lock()
		e, ok := u.cache[key]
		u.mu.Unlock()
		if ok && now().Before(e.expires) {
			return e.acct, nil
		}
	}
	a := u.byUser[strings.ToLower(user)]
	if a == nil {
		bcrypt.CompareHashAndPassword(dummyHash(), []byte(password))
		return nil, ErrBadCredentials
	}
	if bcrypt.CompareHashAndPassword([]byte(a.LocalPasswordHash), []byte(password)) != nil {
		return nil, ErrBadCredentials
	}
	if ttl > 0 {
		u.mu.Lock()
		for k, e := range u.cache { // keep the cache small: drop expired entries
			if !now().Before(e.expires) {
				delete(u.cache, k)
			}
		}
		u.cache[key] = cacheEntry{acct: a, expires: now().Add(ttl)}
		u.mu.Unlock()
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
