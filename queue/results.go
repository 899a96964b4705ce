package queue

import (
	"fmt"
	"time"

	"github.com/relayd/relayd/health"
)

// finish records the outcome of an attempt: results[i] is that of
// recipient pending[i]. Delivered messages leave the spool, failed
// recipients get a DSN (RFC 3464), temporary ones a next attempt after a
// backoff, unless the message outlived its lifetime. fs is the fallback
// account the attempt went through, nil when the account sent its own
// mail: then the time the account has been held so far stays out of the
// lifetime, the message counts as sent through the fallback, and a DSN
// comes from the fallback's mailbox.
func (q *Queue) finish(a *account, fs *fallbackSend, id string, pending []int, results []Result, connErr error, took time.Duration) {
	now := q.opts.Now()
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return
	}
	var failed []Recipient
	var lastTemp string
	sent := 0
	var retryAfter time.Duration // the provider's own wait, if it asked for one
	for k, o := range results {
		if k >= len(pending) {
			break
		}
		r := &e.Recipients[pending[k]]
		r.Reply, r.Code, r.Enhanced = o.Reply, o.Code, o.Enhanced
		switch o.State {
		case RcptSent:
			r.State = RcptSent
			sent++
		case RcptFailed:
			r.State = RcptFailed
			failed = append(failed, *r)
		default:
			lastTemp = o.Reply
			retryAfter = max(retryAfter, o.RetryAfter)
		}
	}
	if took > 0 { // else a bounce for a lifetime that ended without an attempt
		if retryAfter == 0 {
			e.Attempts++ // a throttled attempt does not move the backoff on
		}
		e.LastAttempt = now
	}
	remaining := len(e.pending())
	age := e.age(now)
	if fs != nil && !fs.heldSince.IsZero() {
		age -= now.Sub(fs.heldSince) // still held: frozen, credited when the hold ends
	}
	if fs != nil && sent > 0 {
		a.sentViaFallback++
	}
	if remaining > 0 && age > q.opts.Lifetime {
		for _, i := range e.pending() {
			r := &e.Recipients[i]
			r.State = RcptFailed
			r.Reply = fmt.Sprintf("gave up after %s in the queue; last reply: %s", q.opts.Lifetime, r.Reply)
			r.Code, r.Enhanced = 0, "5.4.7" // RFC 3463: delivery time expired
			failed = append(failed, *r)
		}
		remaining = 0
	}
	var kind EventKind
	switch {
	case remaining > 0:
		e.LastError = lastTemp
		if connErr != nil {
			e.LastError = connErr.Error()
		}
		e.NextAttempt = now.Add(q.backoff(e.Attempts))
		if retryAfter > 0 {
			e.NextAttempt = now.Add(retryAfter) // exactly as asked: never sooner
		}
		kind = EventDeferred
	case hasFailed(e):
		e.State = StateFailed
		e.LastError = "permanent failure"
		kind = EventFailed
	default:
		kind = EventDelivered
	}
	snapshot := e.clone()
	if kind == EventDelivered {
		a.lastDelivered = now
		q.remove(e)
	}
	q.mu.Unlock()

	via := ""
	if fs != nil {
		via = fs.name
	}
	if fs != nil && sent > 0 {
		q.log.Info("sent through the fallback account", "id", id, "account", a.name, "fallback", fs.name, "mode", fs.mode,
			"message_id", snapshot.MessageID, "recipients", sent, "reply", lastReply(results))
	}
	if kind == EventDelivered {
		q.removeDelivered(id)
		q.log.Info("delivered", "id", id, "account", a.name, "via", via, "recipients", len(snapshot.Recipients),
			"reply", lastReply(results), "duration", took.Round(time.Millisecond))
	} else {
		if err := q.spool.Update(snapshot); err != nil {
			q.log.Error("could not record a delivery attempt in the spool", "id", id, "err", err)
		}
		if kind == EventDeferred {
			q.log.Info("delivery deferred", "id", id, "account", a.name, "via", via, "reply", snapshot.LastError, "next_attempt", snapshot.NextAttempt,
				"duration", took.Round(time.Millisecond))
		}
	}
	if len(failed) > 0 {
		q.log.Warn("delivery failed permanently", "id", id, "account", a.name, "via", via, "recipients", len(failed), "reply", failed[0].Reply)
		if !snapshot.DSN {
			from := a.name
			if fs != nil {
				from = fs.name // the account cannot send: its fallback tells the sender
			}
			q.bounce(snapshot, failed, from)
		}
	}
	q.eventVia(kind, id, a.name, via)
}

// lastReply is the upstream's last reply in results, for the log.
func lastReply(results []Result) string {
	for i := len(results) - 1; i >= 0; i-- {
		if results[i].Reply != "" {
			return results[i].Reply
		}
	}
	return ""
}

func hasFailed(e *Entry) bool {
	for _, r := range e.Recipients {
		if r.State == RcptFailed {
			return true
		}
	}
	return false
}

// holdUnconfigured holds the mail of an account that is not configured
// (any more): it stays on disk until the account is added back or an admin
// deletes it.
func (q *Queue) holdUnconfigured(a *account) {
	q.holdAccount(a, health.SourceSMTP, &health.Error{
		State: health.StateNeedsAdmin, Reason: health.ReasonNotConfigured,
		Advice: fmt.Sprintf("account %q is not in the configuration any more: add it back, or delete its mail with 'relayd queue delete'", a.name)})
}

// AccountRemoved holds the mail of account name, which a reload removed
// from the configuration.
func (q *Queue) AccountRemoved(name string) {
	q.mu.Lock()
	a := q.accounts[name]
	q.mu.Unlock()
	if a != nil {
		q.holdUnconfigured(a)
	}
}
