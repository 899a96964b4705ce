// Package health is the single owner of each account's condition: whether
// it is ok, warning, degraded, disconnected, or needs reauthorization or an
// administrator, why (a stable reason code), what to do about it, since
// when, the last error and success, and every reason its outgoing mail is
// held. Everything that talks to a provider reports here — the token
// source, package upstream for the IMAP proxy and the SMTP transport, the
// queue — and everything that tells people reads here: status, the banner,
// metrics, the Nagios exit code, the hook, the log line on every change.
//
// Where an account's condition is decided: Account.current in this file.
// Why its outgoing mail waits: Account.Outgoing in hold.go, beside it.
// docs/architecture.md describes the model, its states and reasons.
//
// Errors follow one convention across relayd: a condition of the account
// is an *Error with State, Reason, Advice (for the admin) and Client (safe
// for a downstream client); callers classify with Temporary, never by
// matching text.
package health

import (
	"fmt"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// State is an account's health.
type State string

// Account states; docs/architecture.md ("The health model") describes them.
const (
	StateOK          State = "ok"
	StateWarning     State = "warning"      // the grant is predicted to end within the warning days
	StateDegraded    State = "degraded"     // transient failures; relayd retries
	StateNeedsReauth State = "needs_reauth" // relayd authorize NAME fixes it
	// StateDisconnected: the retry budget for transient failures is
	// spent; relayd keeps probing and returns to ok by itself.
	StateDisconnected State = "disconnected"
	StateNeedsAdmin   State = "needs_admin" // only an administrator fixes it
)

// Rank orders states from best to worst; disconnected ranks with
// needs_reauth.
func (s State) Rank() int {
	switch s {
	case StateWarning:
		return 1
	case StateDegraded:
		return 2
	case StateNeedsReauth, StateDisconnected:
		return 3
	case StateNeedsAdmin:
		return 4
	}
	return 0
}

// NeedsAttention reports whether the state is one that monitoring must
// raise (Nagios CRITICAL): a person must act, or the mailbox has been
// unreachable past its retry budget.
func (s State) NeedsAttention() bool {
	return s == StateNeedsReauth || s == StateNeedsAdmin || s == StateDisconnected
}

// Source is where relayd saw a condition. Each source's latest condition
// is kept until that source succeeds again or a new grant is installed,
// so an IMAP login that works does not hide SMTP AUTH being disabled.
type Source string

// Sources of conditions.
const (
	SourceToken Source = "token" // the token endpoint
	SourceIMAP  Source = "imap"  // the upstream IMAP server
	SourcePOP3  Source = "pop3"  // the upstream POP3 server
	SourceSMTP  Source = "smtp"  // the upstream SMTP server
	SourceGraph Source = "graph" // Microsoft Graph (transport = "graph"), its token too
)

// Options tune an Account. Zero values take the defaults named.
type Options struct {
	Logger *slog.Logger
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// WarnBefore: a grant predicted to end within this raises the account
	// to warning. Default 10 days; negative disables.
	WarnBefore time.Duration
	// OnTransition, when set, is called (on its own goroutine) once for
	// every change of the account's state, e.g. to run on_state_change.
	OnTransition func(Transition)
	// OnReport, when set, is called for every report from a source: a
	// success (reason "") or a failure, e.g. to count it.
	OnReport func(src Source, reason Reason)
	// OutageBudget: an upstream outage (Error.Outage) still reported
	// after this long turns the account disconnected, as a spent retry
	// budget at the token endpoint does. Zero: outages stay degraded.
	OutageBudget time.Duration
}

// Transition is a change of an account's state.
type Transition struct {
	Account  string
	Old, New State
	Reason   Reason
	Advice   string
	At       time.Time
}

// Forecast is when an account's grant is predicted to end, and why.
type Forecast struct {
	At  time.Time
	Why string // e.g. "90 days without use"
}

// Account is the condition of one account. Its methods are safe for use
// from any goroutine. It never calls out while holding its lock.
type Account struct {
	name string
	log  *slog.Logger
	now  func() time.Time
	opts Options

	panics atomic.Int64

	nmu       sync.Mutex // guards pending and notifying
	pending   []Transition
	notifying bool

	mu        sync.Mutex
	conds     map[Source]*condition
	lastOK    time.Time
	lastErr   string
	lastErrAt time.Time
	holdSince time.Time // outgoing mail held for the condition since; zero when not held
	// adminHold: an admin holds the outgoing mail (hold.go), since
	// adminHoldSince; quarantined are single messages held after relayd
	// failed delivering them, with why.
	adminHold      bool
	adminHoldSince time.Time
	quarantined    map[string]string
	forecast       Forecast
	shown          effective // the state last logged, to log changes once
	changed        chan struct{}
	// heard are the sources that reported since New; heardAll is set by
	// Reset (a new grant says everything anew).
	heard    map[Source]bool
	heardAll bool
}

// effective is an account's state with what explains it.
type effective struct {
	state  State
	reason Reason
	advice string
	detail string
}

type condition struct {
	err   *Error
	since time.Time // first seen with this reason
	at    time.Time // last seen
}

// New returns the condition of account name: ok until told otherwise.
func New(name string, opts Options) *Account {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.WarnBefore == 0 {
		opts.WarnBefore = 10 * 24 * time.Hour
	}
	return &Account{name: name, log: opts.Logger.With("account", name), now: opts.Now, opts: opts,
		conds: map[Source]*condition{}, shown: effective{state: StateOK}}
}

// Tune changes the warning days and the outage budget (a reload that
// changed [health]); see Options. It applies from the next decision.
func (a *Account) Tune(warnBefore, outageBudget time.Duration) {
	a.mu.Lock()
	if warnBefore != 0 {
		a.opts.WarnBefore = warnBefore
	}
	a.opts.OutageBudget = outageBudget
	a.changedLocked()
	a.mu.Unlock()
	a.logChange()
}

// Name is the account's name.
func (a *Account) Name() string { return a.name }

// Logger is the account's logger: relayd's, with the account's name.
func (a *Account) Logger() *slog.Logger { return a.log }

// Fail records a condition seen at src. e.Account is set to the account.
func (a *Account) Fail(src Source, e *Error) {
	e.Account = a.name
	if a.opts.OnReport != nil {
		a.opts.OnReport(src, e.Reason)
	}
	now := a.now()
	a.mu.Lock()
	c := a.conds[src]
	if c == nil || c.err.Reason != e.Reason || c.err.State != e.State && !e.Outage() {
		c = &condition{since: now}
		a.conds[src] = c
	}
	if e.Outage() && a.opts.OutageBudget > 0 && now.Sub(c.since) >= a.opts.OutageBudget {
		up := *e
		up.State = StateDisconnected
		up.Advice = fmt.Sprintf("unreachable for %s: ", now.Sub(c.since).Round(time.Second)) + e.Advice
		e = &up
	}
	c.err, c.at = e, now
	a.hear(src)
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
	if a.opts.OnReport != nil {
		a.opts.OnReport(src, "")
	}
	a.mu.Lock()
	a.lastOK = a.now()
	a.hear(src)
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
	a.heardAll = true
	a.changedLocked()
	a.mu.Unlock()
	a.logChange()
}

// hear records that src reported. a.mu is held.
func (a *Account) hear(src Source) {
	if a.heard == nil {
		a.heard = map[Source]bool{}
	}
	a.heard[src] = true
}

// Heard reports whether any of srcs reported (Fail or Succeed), or Reset
// was called, since the account's condition was made: whether its
// condition there is known, rather than not yet tried (a condition from
// before a restart is not in a new one).
func (a *Account) Heard(srcs ...Source) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.heardAll {
		return true
	}
	for _, src := range srcs {
		if a.heard[src] {
			return true
		}
	}
	return false
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
	return a.worst(srcs...)
}

// worst is Worst with a.mu held.
func (a *Account) worst(srcs ...Source) *Error {
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
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.effective().state
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

// HeldSince is when the hold on outgoing mail began, or zero.
func (a *Account) HeldSince() time.Time {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holdSince
}

// Panic counts a panic recovered while working for the account.
func (a *Account) Panic() { a.panics.Add(1) }

// SetForecast records when the account's grant is predicted to end; a
// zero At means no prediction.
func (a *Account) SetForecast(f Forecast) {
	a.mu.Lock()
	a.forecast = f
	a.changedLocked()
	a.mu.Unlock()
	a.logChange()
}

// Evaluate re-decides the state as time passes (a forecast coming within
// the warning days), logging and reporting a transition. Call it now and
// then.
func (a *Account) Evaluate() { a.logChange() }

// warning says when the forecast is within the warning days, else "".
// a.mu is held.
func (a *Account) warning() string {
	f := a.forecast
	if f.At.IsZero() || a.opts.WarnBefore < 0 || f.At.Sub(a.now()) > a.opts.WarnBefore {
		return ""
	}
	return fmt.Sprintf("the grant is predicted to end on %s (%s)", f.At.UTC().Format("2006-01-02 15:04 MST"), f.Why)
}

// effective decides the account's state: its worst condition, else warning
// when its grant is predicted to end soon, else ok. a.mu is held.
func (a *Account) effective() effective {
	if e := a.current(); e != nil {
		return effective{state: e.State, reason: e.Reason, advice: e.Advice, detail: e.Detail()}
	}
	if w := a.warning(); w != "" {
		return effective{state: StateWarning, reason: ReasonGrantExpiresSoon,
			advice: w + ": run 'relayd authorize " + a.name + "' before then"}
	}
	return effective{state: StateOK}
}

// logChange logs the account's state when it differs from the one last
// logged, and reports the transition: once per change, not once per
// connection that sees it.
func (a *Account) logChange() {
	a.mu.Lock()
	cur := a.effective()
	prev := a.shown
	if cur.state == prev.state && cur.reason == prev.reason {
		a.shown = cur
		a.mu.Unlock()
		return
	}
	a.shown = cur
	if a.opts.OnTransition != nil && cur.state != prev.state {
		// Queued under a.mu, so that transitions are told in the order
		// they were decided.
		a.notify(Transition{Account: a.name, Old: prev.state, New: cur.state, Reason: cur.reason, Advice: cur.advice, At: a.now()})
	}
	a.mu.Unlock()
	switch {
	case cur.state == StateOK:
		a.log.Info("account ok again", "was", prev.state)
	case cur.state == StateWarning:
		a.log.Warn("account's grant ends soon", "reason", cur.reason, "advice", cur.advice)
	case cur.state == StateDegraded:
		a.log.Warn("account degraded; relayd keeps retrying", "reason", cur.reason, "advice", cur.advice, "err", cur.detail)
	default:
		a.log.Error("account needs attention", "state", cur.state, "reason", cur.reason, "advice", cur.advice, "err", cur.detail)
	}
}

// notify hands t to OnTransition on a goroutine of its own, after the
// transitions before it: in order, and never under a caller's lock.
func (a *Account) notify(t Transition) {
	a.nmu.Lock()
	a.pending = append(a.pending, t)
	start := !a.notifying
	a.notifying = true
	a.nmu.Unlock()
	if !start {
		return
	}
	go func() {
		for {
			a.nmu.Lock()
			if len(a.pending) == 0 {
				a.notifying = false
				a.nmu.Unlock()
				return
			}
			t := a.pending[0]
			a.pending = a.pending[1:]
			a.nmu.Unlock()
			a.opts.OnTransition(t)
		}
	}()
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
	// HeldSince is when the account's outgoing mail was held for its
	// condition; AdminHoldSince when an admin held it (relayd queue hold);
	// Quarantined are single messages held after relayd failed
	// delivering them, by queue ID, with why.
	HeldSince      time.Time         `json:"outgoing_held_since,omitzero"`
	AdminHoldSince time.Time         `json:"admin_hold_since,omitzero"`
	Quarantined    map[string]string `json:"quarantined,omitempty"`
	// GrantExpires is when the grant is predicted to end, and why;
	// Warning says so when that is within the warning days, whatever the
	// state (a degraded account may also expire soon).
	GrantExpires    time.Time `json:"grant_expires,omitzero"`
	GrantExpiresWhy string    `json:"grant_expires_why,omitempty"`
	Warning         string    `json:"warning,omitempty"`
	// Panics recovered while working for the account.
	Panics int64 `json:"panics,omitempty"`
}

// Snapshot returns the account's condition.
func (a *Account) Snapshot() Snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := Snapshot{State: StateOK, LastSuccess: a.lastOK, HeldSince: a.holdSince, Panics: a.panics.Load(),
		AdminHoldSince: a.adminHoldSince, Quarantined: maps.Clone(a.quarantined),
		LastError: a.lastErr, LastErrorAt: a.lastErrAt,
		GrantExpires: a.forecast.At, GrantExpiresWhy: a.forecast.Why, Warning: a.warning()}
	eff := a.effective()
	s.State, s.Reason, s.Advice = eff.state, eff.reason, eff.advice
	if e := a.current(); e != nil {
		for _, c := range a.conds {
			if c.err == e {
				s.Since = c.since
			}
		}
	}
	return s
}
