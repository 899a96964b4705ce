// Package health is the single owner of each account's condition: whether
// it is ok, degraded, or needs reauthorization or an administrator, why (a
// stable reason code), what to do about it, since when, the last error and
// success, and whether its outgoing mail is held. Everything that talks to
// a provider reports here — the token source, the IMAP proxy, the SMTP
// queue — and everything that tells people reads here: status, the banner,
// the Nagios exit code, the log line on every change.
//
// Where an account's condition is decided: Account.current in this file.
//
// Errors follow one convention across relayd: a condition of the account
// is an *Error with State, Reason, Advice (for the admin) and Client (safe
// for a downstream client); callers classify with Temporary, never by
// matching text.
package health

import (
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// State is an account's health.
type State string

// Account states, as DESIGN.md "Accounts, tokens, health" defines them.
const (
	StateOK          State = "ok"
	StateDegraded    State = "degraded"     // transient failures; relayd retries
	StateNeedsReauth State = "needs_reauth" // relayd authorize NAME fixes it
	StateNeedsAdmin  State = "needs_admin"  // only an administrator fixes it
)

// Rank orders states from best to worst.
func (s State) Rank() int {
	switch s {
	case StateDegraded:
		return 1
	case StateNeedsReauth:
		return 2
	case StateNeedsAdmin:
		return 3
	}
	return 0
}

// NeedsAttention reports whether a person must act.
func (s State) NeedsAttention() bool { return s == StateNeedsReauth || s == StateNeedsAdmin }

// Source is where relayd saw a condition. Each source's latest condition
// is kept until that source succeeds again or a new grant is installed,
// so an IMAP login that works does not hide SMTP AUTH being disabled.
type Source string

// Sources of conditions.
const (
	SourceToken Source = "token" // the token endpoint
	SourceIMAP  Source = "imap"  // the upstream IMAP server
	SourceSMTP  Source = "smtp"  // the upstream SMTP server
)

// Account is the condition of one account. Its methods are safe for use
// from any goroutine. It never calls out while holding its lock.
type Account struct {
	name string
	log  *slog.Logger
	now  func() time.Time

	panics atomic.Int64

	mu        sync.Mutex
	conds     map[Source]*condition
	lastOK    time.Time
	lastErr   string
	lastErrAt time.Time
	holdSince time.Time // outgoing mail held since; zero when not held
	shown     *Error    // the condition last logged, to log changes once
	changed   chan struct{}
}

type condition struct {
	err   *Error
	since time.Time // first seen with this reason
	at    time.Time // last seen
}

// New returns the condition of account name: ok until told otherwise.
// log may be nil (slog.Default); now may be nil (time.Now).
func New(name string, log *slog.Logger, now func() time.Time) *Account {
	if log == nil {
		log = slog.Default()
	}
	if now == nil {
		now = time.Now
	}
	return &Account{name: name, log: log.With("account", name), now: now, conds: map[Source]*condition{}}
}

// Name is the account's name.
func (a *Account) Name() string { return a.name }

// Fail records a condition seen at src. e.Account is set to the account.
func (a *Account) Fail(src Source, e *Error) {
	e.Account = a.name
	now := a.now()
	a.mu.Lock()
	c := a.conds[src]
	if c == nil || c.err.Reason != e.Reason || c.err.State != e.State {
		c = &condition{since: now}
		a.conds[src] = c
	}
	c.err, c.at = e, now
	a.lastErr, a.lastErrAt = e.Detail(), now
	if a.lastErr == "" {
		a.lastErr = e.Advice
	}
	if a.lastErr == "" {
		a.lastErr = string(e.Reason)
	}
	a.changedLocked()
	a.mu.Unlock()
	a.logChange()
}

// Succeed records that src worked: its condition, if any, is over.
func (a *Account) Succeed(src Source) {
	a.mu.Lock()
	a.lastOK = a.now()
	_, had := a.conds[src]
	delete(a.conds, src)
	if had {
		a.changedLocked()
	}
	a.mu.Unlock()
	if had {
		a.logChange()
	}
}

// Reset clears every condition: a new grant was installed, or an admin
// released the account. Held mail is released by its owner, woken through
// Changed.
func (a *Account) Reset() {
	a.mu.Lock()
	a.conds = map[Source]*condition{}
	a.lastOK = a.now()
	a.changedLocked()
	a.mu.Unlock()
	a.logChange()
}

// Current returns the account's worst condition, or nil when it is ok.
func (a *Account) Current() *Error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.current()
}

// current decides the account's condition: the worst of what its sources
// reported; among equals, the most recent. a.mu is held.
func (a *Account) current() *Error {
	var worst *condition
	for _, c := range a.conds {
		if worst == nil || c.err.State.Rank() > worst.err.State.Rank() ||
			c.err.State.Rank() == worst.err.State.Rank() && c.at.After(worst.at) {
			worst = c
		}
	}
	if worst == nil {
		return nil
	}
	return worst.err
}

// Worst returns the worst condition among those the given sources
// reported, or nil.
func (a *Account) Worst(srcs ...Source) *Error {
	a.mu.Lock()
	defer a.mu.Unlock()
	var worst *condition
	for _, src := range srcs {
		c := a.conds[src]
		if c != nil && (worst == nil || c.err.State.Rank() > worst.err.State.Rank()) {
			worst = c
		}
	}
	if worst == nil {
		return nil
	}
	return worst.err
}

// Condition returns the condition src last reported, or nil.
func (a *Account) Condition(src Source) *Error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.conds[src]; c != nil {
		return c.err
	}
	return nil
}

// State is the account's state.
func (a *Account) State() State {
	if e := a.Current(); e != nil {
		return e.State
	}
	return StateOK
}

// Changed returns a channel closed at the account's next change.
func (a *Account) Changed() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.changed == nil {
		a.changed = make(chan struct{})
	}
	return a.changed
}

func (a *Account) changedLocked() {
	if a.changed != nil {
		close(a.changed)
		a.changed = nil
	}
}

// HoldOutgoing records that the account's outgoing mail is held because
// of its condition, and reports whether the hold starts now.
func (a *Account) HoldOutgoing() (started bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.holdSince.IsZero() {
		return false
	}
	a.holdSince = a.now()
	a.changedLocked()
	return true
}

// EndHold ends the hold on outgoing mail and returns how long it lasted
// (messages' lifetimes do not count that time), or 0 when none was held.
func (a *Account) EndHold() time.Duration {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.holdSince.IsZero() {
		return 0
	}
	d := a.now().Sub(a.holdSince)
	a.holdSince = time.Time{}
	a.changedLocked()
	return d
}

// HeldSince is when the hold on outgoing mail began, or zero.
func (a *Account) HeldSince() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holdSince
}

// Panic counts a panic recovered while working for the account.
func (a *Account) Panic() { a.panics.Add(1) }

// logChange logs the account's condition when it differs from the one
// last logged: once per change, not once per connection that sees it.
func (a *Account) logChange() {
	a.mu.Lock()
	cur := a.current()
	prev := a.shown
	if cur == prev || cur != nil && prev != nil && cur.State == prev.State && cur.Reason == prev.Reason {
		a.shown = cur
		a.mu.Unlock()
		return
	}
	a.shown = cur
	a.mu.Unlock()
	switch {
	case cur == nil:
		a.log.Info("account ok again")
	case cur.State == StateDegraded:
		a.log.Warn("account degraded; relayd keeps retrying", "reason", cur.Reason, "advice", cur.Advice, "err", cur.Detail())
	default:
		a.log.Error("account needs attention", "state", cur.State, "reason", cur.Reason, "advice", cur.Advice, "err", cur.Detail())
	}
}

// Snapshot is an account's condition for status.
type Snapshot struct {
	State       State     `json:"state"`
	Reason      Reason    `json:"reason,omitempty"`
	Advice      string    `json:"advice,omitempty"`
	Since       time.Time `json:"since,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	LastErrorAt time.Time `json:"last_error_at,omitzero"`
	LastSuccess time.Time `json:"last_success,omitzero"`
	// HeldSince is when the account's outgoing mail was held.
	HeldSince time.Time `json:"outgoing_held_since,omitzero"`
	// Panics recovered while working for the account.
	Panics int64 `json:"panics,omitempty"`
}

// Snapshot returns the account's condition.
func (a *Account) Snapshot() Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Snapshot{State: StateOK, LastSuccess: a.lastOK, HeldSince: a.holdSince, Panics: a.panics.Load(),
		LastError: a.lastErr, LastErrorAt: a.lastErrAt}
	if e := a.current(); e != nil {
		s.State, s.Reason, s.Advice = e.State, e.Reason, e.Advice
		for _, c := range a.conds {
			if c.err == e {
				s.Since = c.since
			}
		}
	}
	return s
}
