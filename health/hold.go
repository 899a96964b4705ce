package health

import (
	"maps"
	"time"
)

// Why an account's outgoing mail waits. Every reason lives here:
//   - its condition needs a person (needs_reauth, needs_admin, a token
//     endpoint disconnected): HoldOutgoing, EndHold, HeldSince; lifetimes
//     of held mail are frozen meanwhile. An unreachable upstream
//     (Error.Outage) never holds: delivery is deferred and lifetimes run.
//   - an admin held it (relayd queue hold ACCOUNT): SetAdminHold;
//   - single messages were quarantined after relayd failed while
//     delivering them (a panic): Quarantine.
//
// The queue asks Outgoing before each delivery and keeps the holds on
// disk (the spool); nothing else keeps a copy.

// Outgoing says whether the account's outgoing mail may go now, and if
// not, why: "admin" (an admin's hold) or the reason of the condition that
// holds it.
func (a *Account) Outgoing() (held bool, why string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.adminHold {
		return true, "admin"
	}
	if !a.holdSince.IsZero() {
		if e := a.worst(SourceToken, SourceSMTP); e != nil && e.State.NeedsAttention() && !e.Outage() {
			return true, string(e.Reason)
		}
	}
	return false, ""
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

// Quarantined returns the quarantined messages of the account and why.
func (a *Account) Quarantined() map[string]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return maps.Clone(a.quarantined)
}
