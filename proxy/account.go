package proxy

import (
	"sync/atomic"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
)

// Account is an account as the IMAP proxy sees it: its upstream credentials
// and its open sessions. Safe for use from any goroutine.
type Account struct {
	*auth.Account
	imapSessions atomic.Int64
	// limitLogged is when a login refused by imap_connections was last
	// logged (Unix nanoseconds): once a minute at most.
	limitLogged atomic.Int64
}

// NewAccount wraps an account's credentials for the proxy.
// An account built without a condition (auth.NewAccount always gives
// one) gets its own, so that sessions can report to it.
func NewAccount(a *auth.Account) *Account {
	if a.Health == nil {
		a.Health = health.New(a.Config.Name, health.Options{})
	}
	return &Account{Account: a}
}

// IMAPSessions is the number of open IMAP sessions of the account,
// counting those logging in upstream.
func (a *Account) IMAPSessions() int64 { return a.imapSessions.Load() }

// reserveIMAP counts a new IMAP session, unless the account already has
// as many as its imap_connections allows.
func (a *Account) reserveIMAP() bool {
	n := a.imapSessions.Add(1)
	if max := a.Config.IMAPConnections; max > 0 && n > int64(max) {
		a.imapSessions.Add(-1)
		return false
	}
	return true
}

// logLimit reports whether a refusal by imap_connections should be
// logged now: the first, then once a minute at most, so that a client
// retrying in a loop does not flood the journal.
func (a *Account) logLimit(now time.Time) bool {
	last := a.limitLogged.Load()
	if last != 0 && now.UnixNano()-last < int64(time.Minute) {
		return false
	}
	return a.limitLogged.CompareAndSwap(last, now.UnixNano())
}

// releaseIMAP uncounts a session reserveIMAP counted.
func (a *Account) releaseIMAP() { a.imapSessions.Add(-1) }
