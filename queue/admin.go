package queue

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/relayd/relayd/health"
)

// List returns every queued, held and failed message, oldest first, in
// the state it is shown in (see Get).
func (q *Queue) List() []*Entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.sortedEntries(nil)
	for _, e := range l {
		e.State = q.shown(e)
	}
	return l
}

// shown is the state of e shown to people: a queued message is "held"
// while an admin holds it or its account's outgoing mail is held ("held"
// is shown, never stored). q.mu is held.
func (q *Queue) shown(e *Entry) State {
	if e.State != StateQueued {
		return e.State
	}
	if e.AdminHold {
		return StateHeld
	}
	if a := q.accounts[e.Account]; a != nil {
		if held, _, _ := q.health(a).Outgoing(); held {
			return StateHeld
		}
	}
	return e.State
}

// Get returns one message's metadata, in the state List shows it.
func (q *Queue) Get(id string) (*Entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil {
		return nil, notFound(id)
	}
	c := e.clone()
	c.State = q.shown(e)
	return c, nil
}

// String says it in one line for the command line: whose mail, why, the
// advice, and what releases it.
func (h Hold) String() string {
	what := fmt.Sprintf("account %q: its outgoing mail is held", h.Account)
	if h.ID != "" {
		what = fmt.Sprintf("%s (account %q) is held", h.ID, h.Account)
	}
	s := fmt.Sprintf("%s (%s, %s)", what, h.State, h.Reason)
	if h.Advice != "" {
		s += ": " + h.Advice
	}
	return s + ". Released by: " + h.Release
}

// Holds reports what keeps the mail of target from going out now: an
// account's hold (target an account name), a message's own hold and its
// account's (target a queue ID), or every held account with mail waiting
// (target ""). Nothing when nothing holds it.
func (q *Queue) Holds(target string) []Hold {
	q.mu.Lock()
	defer q.mu.Unlock()
	var hs []Hold
	if e := q.entries[target]; e != nil {
		if e.AdminHold && e.State == StateQueued {
			h := Hold{Account: e.Account, ID: e.ID, State: health.StateOK, Reason: health.ReasonAdminHold,
				Advice: "an admin held this message", Release: "relayd queue release " + e.ID}
			if a := q.accounts[e.Account]; a != nil {
				snap := q.health(a).Snapshot()
				h.State = snap.State
				if why, ok := snap.Quarantined[e.ID]; ok {
					h.Reason, h.Advice = "quarantined", why
					h.Release += " (or relayd queue delete " + e.ID + ")"
				}
			}
			hs = append(hs, h)
		}
		target = e.Account
	}
	for _, name := range slices.Sorted(maps.Keys(q.accounts)) {
		a := q.accounts[name]
		if target != "" && name != target || target == "" && len(a.entries) == 0 {
			continue
		}
		h := q.health(a)
		if held, why, _ := h.Outgoing(); held {
			hs = append(hs, accountHold(name, h, why))
		}
	}
	return hs
}

// accountHold says why the outgoing mail of account name, whose
// condition is h, is held (why is what h.Outgoing said) and what releases
// it.
func accountHold(name string, h *health.Account, why string) Hold {
	if why == "admin" {
		snap := h.Snapshot()
		return Hold{Account: name, State: snap.State, Reason: health.ReasonAdminHold, Since: snap.AdminHoldSince,
			Advice:  "an admin held this account's outgoing mail",
			Release: "relayd queue release " + name}
	}
	hold := Hold{Account: name, State: health.StateDegraded, Since: h.HeldSince(),
		Release: "nothing: the hold is ending, and the mail goes out at once"}
	c, _ := h.HoldingSince()
	if c == nil {
		return hold
	}
	hold.State, hold.Reason, hold.Advice = c.State, c.Reason, c.Advice
	switch {
	case c.Reason == health.ReasonNotConfigured:
		hold.Release = fmt.Sprintf("adding account %q back to the configuration, or relayd queue delete %s", name, name)
	case c.State == health.StateNeedsReauth:
		hold.Release = fmt.Sprintf("relayd authorize %s (the new grant sends the held mail at once)", name)
	case !c.State.NeedsAttention():
		hold.Release = fmt.Sprintf("nothing: relayd tries again by itself and sends the mail once the upstream takes it; relayd queue release %s tries now", name)
	default:
		hold.Release = fmt.Sprintf("doing what the advice says, then relayd queue release %s (tried again at once), or a new grant: relayd authorize %s", name, name)
	}
	return hold
}

// Flush makes every queued message of account (all accounts when empty)
// due now, like postqueue -f, and returns how many of them may go now. It
// does not release holds: held mail is made due but waits (Holds says
// why), and is not counted.
func (q *Queue) Flush(acct string) int {
	q.mu.Lock()
	n := 0
	now := q.opts.Now()
	var wake []*account
	for _, e := range q.entries {
		if e.State == StateQueued && (acct == "" || e.Account == acct) {
			e.NextAttempt = now
			if q.shown(e) == StateQueued {
				n++
			}
		}
	}
	for name, a := range q.accounts {
		if acct == "" || name == acct {
			a.probeAt = now // an outage's next probe, if any, is now
			wake = append(wake, a)
		}
	}
	q.mu.Unlock()
	for _, a := range wake {
		a.wake()
	}
	return n
}

// Op is an admin operation on an account or a message.
type Op string

// Admin operations.
const (
	OpFlush   Op = "flush"   // postqueue -f
	OpHold    Op = "hold"    // postsuper -h
	OpRelease Op = "release" // postsuper -H
)

// ErrUnknownOp is returned by Apply for an operation it does not know.
var ErrUnknownOp = errors.New("unknown queue operation (use flush, hold or release)")

// Apply runs op on target and returns how many messages it concerned. An
// unknown op changes nothing.
func (q *Queue) Apply(op Op, target string) (int, error) {
	switch op {
	case OpFlush:
		return q.Flush(target), nil
	case OpHold:
		return q.Hold(target)
	case OpRelease:
		return q.Release(target)
	}
	return 0, fmt.Errorf("%w: %q", ErrUnknownOp, op)
}

// Hold holds a message (target is a queue ID), like postsuper -h, or a
// whole account (target is an account name): its mail, present and future,
// waits until Release, like Postfix's defer_transports.
func (q *Queue) Hold(target string) (int, error) {
	return q.setAdminHold(target, true)
}

// Release releases what Hold held. Releasing an account also lifts an
// account condition hold, so that its mail is tried again now.
func (q *Queue) Release(target string) (int, error) {
	n, err := q.setAdminHold(target, false)
	if err != nil {
		return 0, err
	}
	if q.isAccount(target) {
		q.release(target, "released by an admin")
	}
	return n, nil
}

// isAccount reports whether name is an account: a configured one, or one
// removed from the configuration whose mail is still queued.
func (q *Queue) isAccount(name string) bool {
	if q.opts.Accounts(name) != nil {
		return true
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	a := q.accounts[name]
	return a != nil && len(a.entries) > 0
}

func (q *Queue) setAdminHold(target string, hold bool) (int, error) {
	var changed []*Entry
	var a *account
	if q.isAccount(target) {
		q.mu.Lock()
		a = q.account(target)
		q.mu.Unlock()
		if err := q.recordAdminHold(target, hold); err != nil {
			return 0, err
		}
		n := 0
		if q.health(a).SetAdminHold(hold) {
			q.mu.Lock()
			for _, e := range a.entries {
				if e.State == StateQueued {
					n++
				}
			}
			q.mu.Unlock()
		}
		a.wake()
		return n, nil
	}
	q.mu.Lock()
	e := q.entries[target]
	if e == nil {
		q.mu.Unlock()
		return 0, notFound(target)
	}
	prevNext := e.NextAttempt
	if e.State != StateFailed && e.AdminHold != hold {
		e.AdminHold = hold
		e.NextAttempt = q.opts.Now()
		changed = append(changed, e.clone())
	}
	a = q.accounts[e.Account]
	q.mu.Unlock()
	for _, c := range changed {
		if err := q.spool.Update(c); err != nil {
			// Not recorded (a full or read-only disk): not applied either,
			// or the next update of the message would record what the
			// admin was told had failed.
			q.mu.Lock()
			if e.AdminHold == hold {
				e.AdminHold, e.NextAttempt = !hold, prevNext
			}
			q.mu.Unlock()
			return 0, err
		}
	}
	if !hold && a != nil {
		q.health(a).Unquarantine(target)
	}
	if a != nil {
		a.wake()
	}
	return len(changed), nil
}

// Retry makes a message due now; a failed one gets its failed recipients
// back and is queued again, like postsuper -r.
func (q *Queue) Retry(id string) error {
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return notFound(id)
	}
	prev := e.clone()
	if e.State == StateFailed {
		for i := range e.Recipients {
			if e.Recipients[i].State == RcptFailed {
				e.Recipients[i].State = RcptPending
			}
		}
		e.State = StateQueued
		e.Created = q.opts.Now() // a fresh lifetime
		e.Frozen = 0
	}
	e.NextAttempt = q.opts.Now().Add(-time.Nanosecond)
	snapshot := e.clone()
	a := q.account(e.Account)
	q.mu.Unlock()
	if err := q.spool.Update(snapshot); err != nil {
		// Not recorded, so not applied: as in setAdminHold.
		q.mu.Lock()
		if e.NextAttempt.Equal(snapshot.NextAttempt) && e.State == snapshot.State {
			*e = *prev
		}
		q.mu.Unlock()
		return err
	}
	a.wake()
	return nil
}

// Delete removes a message from the queue, like postsuper -d; given an
// account's name instead of a queue ID, it removes every message of that
// account that is not being delivered right now (the way to clear the mail
// of an account removed from the configuration).
func (q *Queue) Delete(id string) error {
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		a := q.accounts[id]
		q.mu.Unlock()
		if a != nil && q.isAccount(id) {
			return q.deleteAccount(a)
		}
		return notFound(id)
	}
	if q.busy[id] {
		q.mu.Unlock()
		return errBusy
	}
	q.remove(e)
	a := q.accounts[e.Account]
	q.mu.Unlock()
	if a != nil {
		q.health(a).Unquarantine(id)
	}
	return q.spool.Remove(id)
}

// deleteAccount removes every message of a that is not being delivered.
func (q *Queue) deleteAccount(a *account) error {
	q.mu.Lock()
	var ids []string
	for id, e := range a.entries {
		if !q.busy[id] {
			q.remove(e)
			ids = append(ids, id)
		}
	}
	q.mu.Unlock()
	h := q.health(a)
	var errs []error
	for _, id := range ids {
		h.Unquarantine(id)
		if err := q.spool.Remove(id); err != nil {
			errs = append(errs, err)
		}
	}
	// No mail left, no hold to remember: an account added back later
	// starts afresh.
	q.recordHoldStart(a.name, time.Time{})
	return errors.Join(errs...)
}

var errBusy = ErrBusyError{}

// ErrBusyError: the message is being delivered right now.
type ErrBusyError struct{}

func (ErrBusyError) Error() string {
	return "the message is being delivered right now; try again in a moment"
}

// Message returns the stored message of id.
func (q *Queue) Message(id string) (io.ReadCloser, error) {
	q.mu.Lock()
	_, ok := q.entries[id]
	q.mu.Unlock()
	if !ok {
		return nil, notFound(id)
	}
	return q.spool.Open(id)
}

// WriteList writes entries as text, like postqueue -p, or as JSON (format
// "json"), buffered: a list may hold a hundred thousand messages.
func WriteList(w io.Writer, l []*Entry, format string, now time.Time) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	if format == "json" {
		if l == nil {
			l = []*Entry{} // an empty queue is [], not null
		}
		if err := json.NewEncoder(bw).Encode(l); err != nil {
			return err
		}
		return bw.Flush()
	}
	if len(l) == 0 {
		fmt.Fprintln(bw, "Mail queue is empty")
		return bw.Flush()
	}
	counts := map[State]int{}
	fmt.Fprintf(bw, "%-32s %-12s %-7s %9s %9s %4s  %s -> %s\n", "ID", "ACCOUNT", "STATE", "SIZE", "AGE", "TRY", "FROM", "TO")
	for _, e := range l {
		counts[e.State]++
		fmt.Fprintf(bw, "%-32s %-12s %-7s %9d %9s %4d  %s ->", e.ID, e.Account, e.State, e.Size,
			now.Sub(e.Created).Round(time.Second), e.Attempts, e.From)
		for _, r := range e.Recipients {
			switch r.State {
			case RcptSent:
				fmt.Fprintf(bw, " %s (sent)", r.Addr)
			case RcptFailed:
				fmt.Fprintf(bw, " %s (failed)", r.Addr)
			default:
				fmt.Fprintf(bw, " %s", r.Addr)
			}
		}
		bw.WriteByte('\n')
		if e.LastError != "" {
			fmt.Fprintf(bw, "%32s last error: %s\n", "", e.LastError)
		}
	}
	fmt.Fprintf(bw, "-- %d message(s): %d queued, %d held, %d failed\n", len(l),
		counts[StateQueued], counts[StateHeld], counts[StateFailed])
	return bw.Flush()
}
