package queue

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// List returns every queued, held and failed message, oldest first.
func (q *Queue) List() []*Entry {
	q.mu.Lock()
	defer q.mu.Unlock()
	l := q.sortedEntries(nil)
	for _, e := range l {
		if a := q.accounts[e.Account]; a != nil && e.State == StateQueued {
			if held, _, _ := q.health(a).Outgoing(); held {
				e.State = StateHeld
			}
		}
		if e.AdminHold && e.State == StateQueued {
			e.State = StateHeld
		}
	}
	return l
}

// Get returns one message's metadata.
func (q *Queue) Get(id string) (*Entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.entries[id]
	if e == nil {
		return nil, notFound(id)
	}
	return e.clone(), nil
}

// Flush makes every queued message of account (all accounts when empty)
// due now, like postqueue -f. It does not release holds.
func (q *Queue) Flush(acct string) int {
	q.mu.Lock()
	n := 0
	now := q.opts.Now()
	var wake []*account
	for _, e := range q.entries {
		if e.State == StateQueued && (acct == "" || e.Account == acct) {
			e.NextAttempt = now
			n++
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
	if e.State != StateFailed && e.AdminHold != hold {
		e.AdminHold = hold
		e.NextAttempt = q.opts.Now()
		changed = append(changed, e.clone())
	}
	a = q.accounts[e.Account]
	q.mu.Unlock()
	if !hold && a != nil {
		q.health(a).Unquarantine(target)
	}
	for _, e := range changed {
		if err := q.spool.Update(e); err != nil {
			return 0, err
		}
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
