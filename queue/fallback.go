package queue

// The fallback mailbox (fallback_account, fallback_after, fallback_from).
// While an account's outgoing mail is held for a condition only a person
// fixes (needs_reauth, needs_admin; never an outage, a temporary
// condition or an admin's hold) and fallback_after has passed since the
// account took that state, its worker sends its mail through the fallback
// account: that account's credentials and transport (Options.Transport
// opened with them), its connection limit and its rate. The spool never
// changes; only the copy sent does (rewrite.go). The account itself stays
// in its state, and its hold goes on, until it is reauthorized: then it
// sends its own mail again.

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
)

// FallbackStats is an account's fallback mailbox as status shows it.
type FallbackStats struct {
	// Account is the fallback account (fallback_account).
	Account string `json:"account"`
	// Mode is how the copy sent names its sender now: "rewrite" (From is
	// the fallback's mailbox, Reply-To the original sender) or "keep".
	Mode string `json:"mode"`
	// ForcedRewrite: fallback_from is "keep" but the fallback's upstream
	// refused to send as the account (SendAsDenied), so the fallback
	// rewrites From until the account is reauthorized.
	ForcedRewrite bool `json:"forced_rewrite,omitempty"`
	// Active: the account's mail goes out through the fallback now.
	Active bool `json:"active"`
	// Starts is when the account's held mail goes (or went) through the
	// fallback: fallback_after after the account took its state. Zero
	// while the account is not held for a condition a fallback covers.
	Starts time.Time `json:"starts,omitzero"`
	// Blocked says why the fallback cannot send now, when it cannot.
	Blocked string `json:"blocked,omitempty"`
}

// fallbackPlan is how an account's held mail goes out through its
// fallback account now.
type fallbackPlan struct {
	name  string        // the fallback account
	creds *auth.Account // its credentials, transport and limits
	via   *account      // its delivery state: pacing, connections, probes
	mode  string        // config.FallbackRewrite or config.FallbackKeep
	// heldSince is when the account's hold began: the time since then
	// stays out of lifetimes (credited to them when the hold ends).
	heldSince time.Time
	// probe: the fallback's upstream cannot be reached or refused AUTH
	// for now; one message goes at via.probeAt, as its own worker would
	// probe.
	probe bool
}

// fallbackSend is one attempt through a fallback plan, in the mode it
// was made in.
type fallbackSend struct {
	*fallbackPlan
	mode string
}

// fallbackCheck is what fallbackFor found about an account's fallback.
type fallbackCheck struct {
	name    string        // the fallback account; "" when none is configured
	plan    *fallbackPlan // non-nil: the account's mail goes through it now
	mode    string
	forced  bool
	starts  time.Time       // see FallbackStats.Starts
	blocked string          // see FallbackStats.Blocked
	changed <-chan struct{} // the fallback account's Changed, to wait on
}

// fallbackFor decides whether account name's mail (h is its condition)
// goes through its fallback account at now. It does not take q.mu; the
// plan's via is left for the caller to fill.
func (q *Queue) fallbackFor(name string, h *health.Account, now time.Time) fallbackCheck {
	creds := q.opts.Accounts(name)
	if creds == nil || creds.Config == nil || creds.Config.FallbackAccount == "" {
		return fallbackCheck{}
	}
	cfg := creds.Config
	fc := fallbackCheck{name: cfg.FallbackAccount, mode: cfg.FallbackFrom}
	if fc.mode == "" {
		fc.mode = config.FallbackRewrite
	}
	if fc.mode == config.FallbackKeep && q.forcedRewrite(name) {
		fc.mode, fc.forced = config.FallbackRewrite, true
	}
	cond, since := h.HoldingSince()
	if cond == nil || cond.State != health.StateNeedsReauth && cond.State != health.StateNeedsAdmin {
		return fc // working, in an outage or a temporary trouble: its own mail
	}
	// Counted from the change of state; after a restart the condition
	// is seen anew, and the spool's record of when the hold began
	// (BackdateHold) keeps the earlier start.
	held := h.HeldSince()
	start := since
	if !held.IsZero() && held.Before(start) {
		start = held
	}
	fc.starts = start.Add(cfg.FallbackAfter)
	switch {
	case h.AdminHeld():
		fc.blocked = fmt.Sprintf("an admin held account %s's outgoing mail: 'relayd queue release %s' lets it go through %s", name, name, fc.name)
		return fc
	case now.Before(fc.starts):
		return fc
	}
	fb := q.opts.Accounts(fc.name)
	if fb == nil || fb.Config == nil || fb.Health == nil {
		fc.blocked = fmt.Sprintf("fallback account %s is not configured: add it, or change account %s's fallback_account", fc.name, name)
		return fc
	}
	hb := fb.Health
	fc.changed = hb.Changed()
	q.hmu.Lock()
	fbAdminHeld := q.held[fc.name]
	q.hmu.Unlock()
	cb := hb.Holding()
	switch {
	case fbAdminHeld || hb.AdminHeld():
		fc.blocked = fmt.Sprintf("an admin held fallback account %s's outgoing mail: 'relayd queue release %s' lets it send", fc.name, fc.name)
		return fc
	case cb != nil && cb.State.NeedsAttention():
		fc.blocked = fmt.Sprintf("fallback account %s cannot send either (%s, %s): %s", fc.name, cb.State, cb.Reason, cb.Advice)
		return fc
	case held.IsZero():
		return fc // no mail waits: nothing to send
	}
	fc.plan = &fallbackPlan{name: fc.name, creds: fb, mode: fc.mode, heldSince: held, probe: cb != nil || inOutage(hb)}
	return fc
}

// fallbackStats is account name's fallback for status, or nil when it
// has none. a is its delivery state (nil when it has no mail). q.mu is
// held.
func (q *Queue) fallbackStats(name string, a *account, now time.Time) *FallbackStats {
	creds := q.opts.Accounts(name)
	if creds == nil || creds.Config == nil || creds.Config.FallbackAccount == "" {
		return nil
	}
	h := creds.Health
	if a != nil {
		h = q.health(a)
	}
	if h == nil {
		return nil
	}
	fc := q.fallbackFor(name, h, now)
	return &FallbackStats{Account: fc.name, Mode: fc.mode, ForcedRewrite: fc.forced, Active: fc.plan != nil,
		Starts: fc.starts, Blocked: fc.blocked}
}

// dueFallback returns a's messages to send through plan now, oldest
// first, or how long to wait: those whose next attempt has come, or only
// the oldest at the fallback's next probe while its upstream is in
// trouble.
func (q *Queue) dueFallback(a *account, plan *fallbackPlan) ([]string, time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	plan.via = q.account(plan.name)
	if wait := plan.via.throttledUntil.Sub(q.opts.Now()); wait > 0 {
		return nil, wait // the fallback's mailbox was asked to wait
	}
	return q.pick(a, plan.probe, plan.via.probeAt)
}

// fallbackStarted logs, once per hold, that account a's mail goes
// through its fallback from now on.
func (q *Queue) fallbackStarted(a *account, plan *fallbackPlan) {
	q.mu.Lock()
	first := !a.fallbackOn
	a.fallbackOn = true
	q.mu.Unlock()
	if first {
		q.log.Warn("sending the account's held mail through its fallback account; the account still needs attention",
			"account", a.name, "fallback", plan.name, "mode", plan.mode, "held_since", plan.heldSince)
	}
}

// fallbackEnded is called when account a's hold ended (it was
// reauthorized, or its mail was deleted): it sends its own mail again and
// its fallback, if it was made to rewrite From, keeps it again.
func (q *Queue) fallbackEnded(a *account) {
	q.mu.Lock()
	was := a.fallbackOn
	a.fallbackOn = false
	q.mu.Unlock()
	if was {
		q.log.Info("the account sends its own mail again, no longer through its fallback account", "account", a.name)
	}
	if q.setForcedRewrite(a.name, false) {
		q.log.Info("the account's fallback will send with the sender's From again (fallback_from = \"keep\") when next needed", "account", a.name)
	}
}

// forcedRewrite reports whether account name's fallback must rewrite
// From although fallback_from is "keep".
func (q *Queue) forcedRewrite(name string) bool {
	q.hmu.Lock()
	defer q.hmu.Unlock()
	return q.rewrite[name]
}

// setForcedRewrite records (on) or forgets that account name's fallback
// must rewrite From, in the spool so that it outlives a restart. It
// reports whether that changed anything.
func (q *Queue) setForcedRewrite(name string, on bool) bool {
	q.saveMu.Lock() // saves in the order of the changes
	defer q.saveMu.Unlock()
	q.hmu.Lock()
	if q.rewrite[name] == on {
		q.hmu.Unlock()
		return false
	}
	if on {
		q.rewrite[name] = true
	} else {
		delete(q.rewrite, name)
	}
	names := slices.Sorted(maps.Keys(q.rewrite))
	q.hmu.Unlock()
	if err := q.spool.SaveForcedRewrites(names); err != nil {
		q.log.Error("could not record in the spool whether the account's fallback rewrites From; after a restart it may try keeping it again", "account", name, "err", err)
	}
	return true
}

// sendAsRefused handles the fallback's upstream refusing to send as
// account a (SendAsDenied) in keep mode: from now on, until a is
// reauthorized, its fallback rewrites From. Said once.
func (q *Queue) sendAsRefused(a *account, plan *fallbackPlan, id string, r Result) {
	if !q.setForcedRewrite(a.name, true) {
		return
	}
	cfg := q.opts.Accounts(a.name)
	addr := a.name
	if cfg != nil {
		addr = cfg.Config.Email
	}
	q.log.Warn(fmt.Sprintf("fallback account %s may not send as %s: its mail now goes out with From rewritten to %s's mailbox (Reply-To the sender) until account %s is reauthorized; to keep the sender's From, give %s Send As rights on %s (Exchange: Add-RecipientPermission -Identity %s -Trustee %s -AccessRights SendAs)",
		plan.name, addr, plan.name, a.name, plan.creds.Config.Email, addr, addr, plan.creds.Config.Email),
		"account", a.name, "fallback", plan.name, "id", id, "reply", r.Reply)
}
