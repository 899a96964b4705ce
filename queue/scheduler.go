package queue

// The scheduler: one worker per account decides which of the account's
// messages are due, asks the account's health whether its mail may go,
// opens connections through the Transport (up to the account's limit,
// paced by its rate) and records each message's results (results.go).

import (
	"context"
	"fmt"
	"io"
	"maps"
	"sort"
	"sync"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/provider"
)

// worker delivers one account's mail until ctx ends. It wakes on new
// mail (a.kick), at the next due time, and when the account's condition
// changes (a new grant releases held mail at once).
func (q *Queue) worker(ctx context.Context, a *account) {
	for !q.workerLoop(ctx, a) {
		// A panic outside one message's delivery: start over after a
		// pause, so that a fault that recurs does not spin.
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// workerLoop is the worker's loop. It returns true when ctx ends, false
// after recovering a panic.
func (q *Queue) workerLoop(ctx context.Context, a *account) (done bool) {
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(q.log, q.health(a), "scheduling the account's mail", v)
			q.mu.Lock()
			for id := range q.busy {
				if e := q.entries[id]; e != nil && e.Account == a.name {
					delete(q.busy, id)
				}
			}
			q.mu.Unlock()
			done = false
		}
	}()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		h := q.health(a)
		changed := h.Changed()
		q.checkHold(a, h, "its condition is over")
		ids, wait := q.due(a, h)
		if len(ids) > 0 {
			q.deliverBatch(ctx, a, ids)
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return true
		case <-a.kick:
		case <-changed:
		case <-timer.C:
		}
	}
}

// checkHold has the account's health decide whether its mail is held
// (health.Account.ReviewHold) and acts on a change: a hold that starts is
// logged and announced; one that ends (a new grant, a successful refresh,
// an admin's release) credits the time held to its messages' lifetimes and
// makes them due now. why says what ended a hold, for the log.
func (q *Queue) checkHold(a *account, h *health.Account, why string) {
	a.holdMu.Lock()
	defer a.holdMu.Unlock()
	started, ended := h.ReviewHold(q.hasQueued(a, h))
	q.hmu.Lock()
	before, recorded := q.holdStarts[a.name]
	q.hmu.Unlock()
	switch {
	case started:
		if recorded {
			h.BackdateHold(before) // the hold began before a restart
		} else {
			q.recordHoldStart(a.name, h.HeldSince())
		}
		c := h.Worst(health.SourceToken, health.SourceSMTP, health.SourceGraph)
		q.log.Warn("holding the account's outgoing mail: nothing bounces, new mail is still accepted",
			"account", a.name, "state", c.State, "reason", c.Reason, "advice", c.Advice, "err", c.Detail())
		q.event(EventHeld, "", a.name)
	case ended > 0:
		q.mu.Lock()
		q.resume(a, ended)
		q.mu.Unlock()
		q.recordHoldStart(a.name, time.Time{})
		q.log.Info("account released: delivering its held mail now", "account", a.name, "why", why)
	case recorded && h.HeldSince().IsZero() && h.Holding() == nil:
		// A hold that began before a restart whose condition is gone
		// now: its time stays out of the lifetimes all the same.
		q.mu.Lock()
		q.resume(a, max(q.opts.Now().Sub(before), time.Nanosecond))
		q.mu.Unlock()
		q.recordHoldStart(a.name, time.Time{})
		q.log.Info("account released: delivering its held mail now", "account", a.name, "why", "its condition ended while relayd was stopped")
	}
}

// recordHoldStart records in the spool when account name's hold for its
// condition began (zero: it ended), so that the time held outlives a
// restart.
func (q *Queue) recordHoldStart(name string, since time.Time) {
	q.saveMu.Lock() // saves in the order of the changes
	defer q.saveMu.Unlock()
	q.hmu.Lock()
	if _, had := q.holdStarts[name]; since.IsZero() && !had {
		q.hmu.Unlock()
		return
	}
	if since.IsZero() {
		delete(q.holdStarts, name)
	} else {
		q.holdStarts[name] = since
	}
	starts := maps.Clone(q.holdStarts)
	q.hmu.Unlock()
	if err := q.spool.SaveHoldStarts(starts); err != nil {
		q.log.Error("could not record the start of the account's hold; after a restart its held time may count in lifetimes", "account", name, "err", err)
	}
}

// hasQueued reports whether a has mail waiting that no admin held.
func (q *Queue) hasQueued(a *account, h *health.Account) bool {
	if h.AdminHeld() {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for _, e := range a.entries {
		if e.State == StateQueued && !e.AdminHold {
			return true
		}
	}
	return false
}

// due returns the messages to attempt now, oldest first, or how long to
// wait. It looks only at the account's own messages (it runs on every
// submission): none while the account is held for a condition that needs
// a person or by an admin, only the oldest as a probe while it is held for
// a temporary condition or its upstream cannot be reached.
func (q *Queue) due(a *account, h *health.Account) ([]string, time.Duration) {
	held, _, probe := h.Outgoing()
	if held && !probe {
		return nil, time.Hour // until the hold ends: h.Changed wakes the worker
	}
	outage := inOutage(h)
	q.mu.Lock()
	defer q.mu.Unlock()
	now := q.opts.Now()
	probe = probe || outage
	const never = time.Duration(1<<63 - 1)
	var ids []string
	next := never
	for _, e := range a.entries {
		if e.State != StateQueued || e.AdminHold || q.busy[e.ID] {
			continue
		}
		switch {
		case probe:
			// Probe with the oldest message; success releases the rest.
			if len(ids) == 0 {
				ids = append(ids, e.ID)
			} else if e.ID < ids[0] {
				ids[0] = e.ID
			}
		case !now.Before(e.NextAttempt):
			ids = append(ids, e.ID)
		default:
			next = min(next, e.NextAttempt.Sub(now))
		}
	}
	if probe {
		if len(ids) == 0 {
			return nil, time.Hour
		}
		if now.Before(a.probeAt) {
			return nil, a.probeAt.Sub(now)
		}
		return ids, 0
	}
	if len(ids) == 0 && next == never {
		return nil, time.Hour
	}
	sort.Strings(ids) // IDs begin with the time: oldest first
	return ids, next
}

// deliverBatch delivers ids over up to the account's connection limit,
// reusing each connection for several messages.
func (q *Queue) deliverBatch(ctx context.Context, a *account, ids []string) {
	creds := q.opts.Accounts(a.name)
	if creds == nil {
		q.holdUnconfigured(a)
		return
	}
	q.mu.Lock()
	for _, id := range ids {
		q.busy[id] = true
	}
	q.mu.Unlock()
	var (
		mu   sync.Mutex
		next int
	)
	take := func() string {
		mu.Lock()
		defer mu.Unlock()
		if next == len(ids) {
			return ""
		}
		next++
		return ids[next-1]
	}
	conns := min(maxConns(creds.Config), len(ids))
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				if v := recover(); v != nil {
					health.Recovered(q.log, q.health(a), "connecting to the upstream SMTP server", v)
				}
			}()
			q.runConnection(ctx, a, creds, take)
		}()
	}
	wg.Wait()
	q.mu.Lock()
	for _, id := range ids {
		delete(q.busy, id)
	}
	q.mu.Unlock()
	if c := outage(creds.Health); c != nil {
		// The sender reads this in the DSN: the error, not the advice
		// for the admin.
		q.expireOverdue(a, fmt.Sprintf("the upstream mail server could not be reached (%v)", c.Err))
	}
}

// maxConns is the account's limit of concurrent upstream SMTP connections
// (config fills the provider's, e.g. Exchange Online's 3 per mailbox), or
// of Graph requests; 2 when nothing says.
func maxConns(a *config.Account) int {
	if a.Graph() {
		return provider.GraphConcurrency // Graph's own limit per mailbox
	}
	if a.SMTPConnections > 0 {
		return a.SMTPConnections
	}
	return 2
}

// minInterval is the pause between two messages of an account that its
// rate limit needs (Exchange Online: 30 per minute).
func minInterval(a *config.Account) time.Duration {
	if a.SMTPRate <= 0 {
		return 0
	}
	return time.Minute / time.Duration(a.SMTPRate)
}

// runConnection opens one upstream connection and delivers messages from
// take over it until there are none or the connection fails.
func (q *Queue) runConnection(ctx context.Context, a *account, creds *auth.Account, take func() string) {
	c, err := q.opts.Transport.Open(ctx, creds)
	if err != nil {
		if ctx.Err() != nil {
			return // relayd is stopping: nothing about the account
		}
		he := health.AsError(err)
		switch {
		case he == nil:
			q.outage(a, creds, err)
		case he.Outage():
			q.deferAccount(a, creds, he)
		default:
			q.holdAccount(a, "", he) // reported by the login
		}
		return
	}
	defer c.Close()
	if inOutage(creds.Health) || !creds.Health.HeldSince().IsZero() {
		q.release(a.name, "the upstream answers again")
	}
	for {
		if ctx.Err() != nil {
			return // stopping: start no new delivery
		}
		id := take()
		if id == "" {
			return
		}
		q.pace(ctx, a, creds.Config)
		q.mu.Lock()
		e := q.entries[id]
		var snapshot *Entry
		if e != nil && e.State == StateQueued && !e.AdminHold {
			snapshot = e.clone()
		}
		q.mu.Unlock()
		if snapshot == nil {
			continue // deleted or held meanwhile
		}
		if !q.attempt(ctx, a, c, snapshot) {
			return
		}
		if err := c.Reset(); err != nil {
			return
		}
	}
}

// attempt delivers one message on c and records the outcome. It reports
// whether c may carry the next message. A panic while handling the message
// would recur on every retry: the message is held with the reason
// recorded, and the rest of the queue flows.
func (q *Queue) attempt(ctx context.Context, a *account, c Conn, e *Entry) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(q.log, q.health(a), "delivering message "+e.ID, v)
			q.quarantine(e.ID, fmt.Sprintf("relayd hit an internal error delivering it (%v); after an upgrade, 'relayd queue release %s' tries again", v, e.ID))
			ok = false // the connection's state is unknown
		}
	}()
	fault.Hit("deliver")
	start := time.Now()
	pending := e.pending()
	m := &Message{ID: e.ID, From: e.From, Size: e.Size, Open: func() (io.ReadCloser, error) { return q.spool.Open(e.ID) }}
	for _, i := range pending {
		m.To = append(m.To, e.Recipients[i].Addr)
	}
	results, connErr := c.Deliver(ctx, m)
	q.finish(a, e.ID, pending, results, connErr, time.Since(start))
	return connErr == nil
}

// quarantine holds message id as an admin hold would, with why recorded.
func (q *Queue) quarantine(id, why string) {
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return
	}
	e.AdminHold, e.LastError = true, why
	snapshot := e.clone()
	a := q.accounts[e.Account]
	q.mu.Unlock()
	if a != nil {
		q.health(a).Quarantine(id, why)
	}
	if err := q.spool.Update(snapshot); err != nil {
		q.log.Error("could not record the hold of a message that made relayd fail; it is held until restart", "id", id, "err", err)
	}
	q.event(EventHeld, id, snapshot.Account)
}

// pace waits until the account's rate limit allows the next message.
func (q *Queue) pace(ctx context.Context, a *account, cfg *config.Account) {
	iv := minInterval(cfg)
	if iv == 0 {
		return
	}
	q.mu.Lock()
	wait := a.lastSend.Add(iv).Sub(q.opts.Now())
	a.lastSend = q.opts.Now().Add(max(wait, 0))
	q.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// outage records a connection that failed before any reply about the
// account (a dropped connection during AUTH, an unknown error): like an
// unreachable server, nothing is held and a probe tries again after a
// backoff.
func (q *Queue) outage(a *account, creds *auth.Account, err error) {
	src, host := outSource(creds), creds.Config.SMTPServer
	if src == health.SourceGraph {
		host = creds.Config.GraphURL
	}
	he := health.Unreachable(src, host, err)
	creds.Health.Fail(src, he)
	q.deferAccount(a, creds, he)
}

// deferAccount schedules the next probe of an account whose upstream
// cannot be reached (its health says so: degraded smtp_unreachable, then
// disconnected). Nothing is held: messages keep aging, as in Postfix.
func (q *Queue) deferAccount(a *account, creds *auth.Account, he *health.Error) {
	q.mu.Lock()
	first := a.probeAt.IsZero() || a.backoff == 0
	a.backoff = min(max(2*a.backoff, q.opts.RetryMin), q.opts.RetryMax)
	if first {
		a.backoff = q.opts.RetryMin
	}
	a.probeAt = q.opts.Now().Add(a.backoff)
	backoff := a.backoff
	q.mu.Unlock()
	q.log.Warn("upstream unreachable; mail stays queued and is retried", "account", a.name,
		"reason", he.Reason, "err", he.Err, "retry_in", backoff)
	q.event(EventDeferred, "", a.name)
}

// expireOverdue bounces the account's queued messages whose lifetime ended
// while no attempt could be made because its upstream cannot be reached:
// as in Postfix, an outage does not stop the clock (a hold does).
func (q *Queue) expireOverdue(a *account, why string) {
	now := q.opts.Now()
	q.mu.Lock()
	var ids []string
	for id, e := range a.entries {
		if e.State == StateQueued && !e.AdminHold && !q.busy[id] && e.age(now) > q.opts.Lifetime {
			q.busy[id] = true
			ids = append(ids, id)
		}
	}
	q.mu.Unlock()
	for _, id := range ids {
		q.mu.Lock()
		var pending []int
		if e := q.entries[id]; e != nil {
			pending = e.pending()
		}
		q.mu.Unlock()
		results := make([]Result, len(pending))
		for i := range results {
			results[i] = Result{State: RcptPending, Reply: why}
		}
		q.finish(a, id, pending, results, nil, 0)
		q.mu.Lock()
		delete(q.busy, id)
		q.mu.Unlock()
	}
}
