// Package registry holds relayd's running accounts: for each configured
// account its configuration, its condition (package health), its token
// source or password and TLS settings (package auth), and its counters. The
// daemon builds it once from the configuration and hands it to the IMAP
// and SMTP listeners and the queue (its Auth method); status reads it
// through the daemon. A reload builds the accounts that changed (Build,
// which also gives a kept condition changed warn_days and retry_window)
// and swaps the set in one step, so every reader sees one consistent set.
// Nothing else keeps a list of running accounts.
package registry

import (
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
)

// Account is one running account. Safe for use from any goroutine.
type Account struct {
	*auth.Account
	// imapSessions counts the account's open IMAP sessions; an account
	// a reload edited shares its predecessor's (KeepSessions), so that
	// sessions opened before the reload still count against the limit.
	imapSessions *atomic.Int64
	// pop3Sessions counts its open POP3 sessions (no limit: providers
	// document none), shared the same way.
	pop3Sessions *atomic.Int64
	// limitLogged is when a login refused by imap_connections was last
	// logged (Unix nanoseconds): once a minute at most.
	limitLogged atomic.Int64
}

// Wrap makes a running account of a's credentials. An account built
// without a condition (auth.NewAccount always gives one) gets its own, so
// that sessions can report to it.
func Wrap(a *auth.Account) *Account {
	if a.Health == nil {
		a.Health = health.New(a.Config.Name, health.Options{})
	}
	return &Account{Account: a, imapSessions: new(atomic.Int64), pop3Sessions: new(atomic.Int64)}
}

// KeepSessions makes a count the open IMAP and POP3 sessions of prev, the
// account it replaces in a reload, as its own: those sessions go on, and
// release their places when they end.
func (a *Account) KeepSessions(prev *Account) {
	a.imapSessions = prev.imapSessions
	a.pop3Sessions = prev.pop3Sessions
}

// POP3Sessions is the number of open POP3 sessions of the account,
// counting those logging in upstream.
func (a *Account) POP3Sessions() int64 { return a.pop3Sessions.Load() }

// OpenPOP3 counts a new POP3 session; ClosePOP3 uncounts it.
func (a *Account) OpenPOP3() { a.pop3Sessions.Add(1) }

// ClosePOP3 uncounts a session OpenPOP3 counted.
func (a *Account) ClosePOP3() { a.pop3Sessions.Add(-1) }

// IMAPSessions is the number of open IMAP sessions of the account,
// counting those logging in upstream.
func (a *Account) IMAPSessions() int64 { return a.imapSessions.Load() }

// ReserveIMAP counts a new IMAP session, unless the account already has as
// many as its imap_connections allows.
func (a *Account) ReserveIMAP() bool {
	n := a.imapSessions.Add(1)
	if max := a.Config.IMAPConnections; max > 0 && n > int64(max) {
		a.imapSessions.Add(-1)
		return false
	}
	return true
}

// ReleaseIMAP uncounts a session ReserveIMAP counted.
func (a *Account) ReleaseIMAP() { a.imapSessions.Add(-1) }

// LogLimit reports whether a refusal by imap_connections should be logged
// now: the first, then once a minute at most, so that a client retrying in
// a loop does not flood the journal.
func (a *Account) LogLimit(now time.Time) bool {
	last := a.limitLogged.Load()
	if last != 0 && now.UnixNano()-last < int64(time.Minute) {
		return false
	}
	return a.limitLogged.CompareAndSwap(last, now.UnixNano())
}

// Registry is the set of running accounts. Its methods are safe for use
// from any goroutine.
type Registry struct {
	m atomic.Pointer[map[string]*Account]
}

// New returns a registry of accounts, by name.
func New(accounts map[string]*Account) *Registry {
	r := &Registry{}
	r.Swap(accounts)
	return r
}

// Get returns the account named name, or nil.
func (r *Registry) Get(name string) *Account { return (*r.m.Load())[name] }

// Auth returns the upstream credentials of account name, or nil (the
// queue's lookup).
func (r *Registry) Auth(name string) *auth.Account {
	if a := r.Get(name); a != nil {
		return a.Account
	}
	return nil
}

// Health returns the condition of account name, or nil.
func (r *Registry) Health(name string) *health.Account {
	if a := r.Get(name); a != nil {
		return a.Health
	}
	return nil
}

// Map returns every account by name; do not modify it.
func (r *Registry) Map() map[string]*Account { return *r.m.Load() }

// Swap makes accounts the running set (a reload) and returns the old one.
func (r *Registry) Swap(accounts map[string]*Account) (old map[string]*Account) {
	if accounts == nil {
		accounts = map[string]*Account{}
	}
	if p := r.m.Swap(&accounts); p != nil {
		return *p
	}
	return nil
}

// BuildOptions are what accounts are built with.
type BuildOptions struct {
	Store      *auth.Store
	HTTPClient *http.Client // for the token endpoint; nil: http.DefaultClient
	Logger     *slog.Logger
	// OnTransition and OnReport, when set, are told of each account's
	// state changes (the on_state_change hook) and of every report from
	// its sources (metrics).
	OnTransition func(account string, t health.Transition)
	OnReport     func(account string, src health.Source, r health.Reason)
}

// Build makes the running account of a under cfg: its condition and its
// token source (OAuth) or password. keep, when not nil, is the condition
// it keeps (an account a reload edited keeps its history).
func Build(cfg *config.Config, a *config.Account, keep *health.Account, opts BuildOptions) (*Account, error) {
	warn := time.Duration(cfg.Health.WarnDays) * 24 * time.Hour
	if warn == 0 {
		warn = -1 // warn_days = 0: no warnings
	}
	h := keep
	if h != nil {
		h.Tune(warn, cfg.Health.RetryWindow)
	} else {
		name := a.Name
		ho := health.Options{Logger: opts.Logger, WarnBefore: warn, OutageBudget: cfg.Health.RetryWindow}
		if opts.OnTransition != nil {
			ho.OnTransition = func(t health.Transition) { opts.OnTransition(name, t) }
		}
		if opts.OnReport != nil {
			ho.OnReport = func(src health.Source, r health.Reason) { opts.OnReport(name, src, r) }
		}
		h = health.New(a.Name, ho)
	}
	var src *auth.Source
	if a.OAuth() {
		var err error
		src, err = auth.NewSource(auth.SourceOptions{
			Account: a, Store: opts.Store, HTTPClient: opts.HTTPClient, Logger: opts.Logger, Health: h,
			RetryBudget: cfg.Health.RetryBudget, RetryWindow: cfg.Health.RetryWindow,
		})
		if err != nil {
			return nil, err
		}
	}
	creds, err := auth.NewAccount(a, src)
	if err != nil {
		return nil, err
	}
	creds.Health = h
	return Wrap(creds), nil
}
