package proxy

import (
	"sync/atomic"

	"github.com/relayd/relayd/auth"
)

// Account is an account as the IMAP proxy sees it: its upstream credentials
// and its open sessions. Safe for use from any goroutine.
type Account struct {
	*auth.Account
	imapSessions atomic.Int64
}

// NewAccount wraps an account's credentials for the proxy.
func NewAccount(a *auth.Account) *Account { return &Account{Account: a} }

// IMAPSessions is the number of open IMAP sessions of the account.
func (a *Account) IMAPSessions() int64 { return a.imapSessions.Load() }
