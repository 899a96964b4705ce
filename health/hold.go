package health

import (
	"time"
)

// Why an account's outgoing mail waits. Every reason lives here:
//   - its condition: any token, SMTP or Graph condition that is not an
//     outage
//     (a dead grant, SMTP AUTH switched off, a token endpoint in trouble,
//     an AUTH refused for now); ReviewHold starts and ends the hold,
//     HeldSince says since when; lifetimes of held mail are frozen
//     meanwhile, and a temporary condition is probed with one message. An
//     unreachable upstream (Error.Outage) never holds: delivery is
//     deferred and lifetimes run.
//   - an admin held it (relayd queue hold ACCOUNT): SetAdminHold;
//   - single messages were quarantined after relayd failed while
//     delivering them (a panic): Quarantine.
//
// The queue calls ReviewHold when the account or its mail changed, asks
// Outgoing before each delivery, and keeps the admin's holds on disk (the
// spool); nothing else decides a hold.

// holding returns the condition the account's outgoing mail is held for:
// the worst token or SMTP condition that is not an outage, or nil. a.mu is
// held.
func (a *Account) holding() *Error {
	if c := a.holdingCond(); c != nil {
		return c.err
	}
	return nil
}

// holdingCond is holding with since when the account has had that
// condition. a.mu is held.
func (a *Account) holdingCond() *condition {
	var worst *condition
	for _, src := range []Source{SourceToken, SourceSMTP, SourceGraph} {
		c := a.conds[src]
		if c != nil && !c.err.Outage() && (worst == nil || c.err.State.Rank() > worst.err.State.Rank()) {
			worst = c
		}
	}
	return worst
}

// Holding returns the condition that holds, or would hold, the account's
// outgoing mail (see ReviewHold), or nil.
func (a *Account) Holding() *Error {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.holding()
}

// HoldingSince returns what Holding returns and since when the account
// has had that condition (first seen with its reason): the account's
// change of state that a fallback mailbox counts fallback_after from.
// Zero when there is none.
func (a *Account) HoldingSince() (*Error, time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if c := a.holdingCond(); c != nil {
		return c.err, c.since
	}
	return nil, time.Time{}
}

// ReviewHold decides, from the account's token and SMTP conditions,
// whether its outgoing mail is held for its condition; it alone starts and
// ends that hold. Any condition of those sources that is not an outage
// holds the mail while some is waiting (the queue says so with waiting);
// once no such condition remains the hold ends. It returns whether a hold
// started now and, when one ended, how long it lasted (messages'
// lifetimes do not count that time; 0 when none ended).
func (a *Account) ReviewHold(waiting bool) (started bool, ended time.Duration) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := a.holding()
	switch {
	case c != nil && a.holdSince.IsZero() && waiting:
		a.holdSince = a.now()
		a.changedLocked()
		return true, 0
	case c == nil && !a.holdSince.IsZero():
		ended = max(a.now().Sub(a.holdSince), time.Nanosecond)
		a.holdSince = time.Time{}
		a.changedLocked()
		return false, ended
	}
	return false, 0
}

// BackdateHold moves the start of the hold for the account's condition
// back to since, when a hold is on and began later: a hold that began
// before relayd restarted, as the queue's spool recorded it, so that all
// the time held stays out of messages' lifetimes.
func (a *Account) BackdateHold(since time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.holdSince.IsZero() && since.Before(a.holdSince) {
		a.holdSince = since
		a.changedLocked()
	}
}

// Outgoing says whether the account's outgoing mail waits now, why ("admin"
// for an admin's hold, else the reason of the condition that holds it),
// and whether the queue should probe: try one message after its backoff,
// because the condition is temporary (degraded) and may pass by itself;
// else it waits until the account changes (Changed).
func (a *Account) Outgoing() (held bool, why string, probe bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adminHold {
		return true, "admin", false
	}
	if a.holdSince.IsZero() {
		return false, "", false
	}
	c := a.holding()
	if c == nil {
		return true, "", true // ending: ReviewHold releases it
	}
	return true, string(c.Reason), !c.State.NeedsAttention()
}

// SetAdminHold holds (on) or releases the account's outgoing mail for an
// admin, and reports whether that changed anything.
func (a *Account) SetAdminHold(on bool) (changed bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adminHold == on {
		return false
	}
	a.adminHold = on
	if on {
		a.adminHoldSince = a.now()
	} else {
		a.adminHoldSince = time.Time{}
	}
	a.changedLocked()
	return true
}

// AdminHeld reports whether an admin holds the account's outgoing mail.
func (a *Account) AdminHeld() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.adminHold
}

// Quarantine records that message id waits because relayd failed while
// delivering it (why says how and what to do).
func (a *Account) Quarantine(id, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.quarantined == nil {
		a.quarantined = map[string]string{}
	}
	a.quarantined[id] = why
	a.changedLocked()
}

// Unquarantine ends message id's quarantine (an admin released or deleted
// it) and reports whether it was quarantined.
func (a *Account) Unquarantine(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if _, ok := a.quarantined[id]; !ok {
		return false
	}
	delete(a.quarantined, id)
	a.changedLocked()
	return true
}
