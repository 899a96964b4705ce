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
	"sync/atomic"
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
		if ctx.Err() != nil {
			return true
		}
		h := q.health(a)
		changed := h.Changed()
		q.checkHold(a, h, "its condition is over")
		ids, wait := q.due(a, h)
		if len(ids) > 0 {
			q.deliverBatch(ctx, a, nil, ids)
			continue
		}
		// Held for a condition a fallback mailbox covers: its mail may
		// go through the fallback account (fallback.go), once
		// fallback_after has passed.
		now := q.opts.Now()
		fc := q.fallbackFor(a.name, h, now)
		if fc.plan != nil {
			ids, fwait := q.dueFallback(a, fc.plan)
			if len(ids) > 0 {
				q.fallbackStarted(a, fc.plan)
				q.deliverBatch(ctx, a, fc.plan, ids)
				continue
			}
			wait = min(wait, fwait)
		} else if now.Before(fc.starts) {
			wait = min(wait, fc.starts.Sub(now))
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return true
		case <-a.kick:
		case <-changed:
		case <-fc.changed: // the fallback account's condition changed
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
		q.fallbackEnded(a) // before the release is announced
		q.mu.Lock()
		q.resume(a, ended)
		q.mu.Unlock()
		q.recordHoldStart(a.name, time.Time{})
		q.log.Info("account released: delivering its held mail now", "account", a.name, "why", why)
	case recorded && h.HeldSince().IsZero() && h.Holding() == nil &&
		h.Heard(health.SourceToken, health.SourceSMTP, health.SourceGraph):
		// A hold that began before a restart whose condition is gone
		// now (the account's outgoing side was tried since, and worked):
		// its time stays out of the lifetimes all the same. Until it is
		// tried, the record (and the fallback's forced rewrite) stays.
		q.fallbackEnded(a)
		q.mu.Lock()
		q.resume(a, max(q.opts.Now().Sub(before), time.Nanosecond))
		q.mu.Unlock()
		q.recordHoldStart(a.name, time.Time{})
		q.log.Info("account released: delivering its held mail now", "account", a.name, "why", "its condition ended while relayd was stopped")
	}
}

// HeldForCondition reports whether account name's mail was held for its
// condition when relayd last ran (the spool's condition-holds.list), and
// since when: for views of the spool while the daemon is stopped.
func (q *Queue) HeldForCondition(name string) (time.Time, bool) {
	q.hmu.Lock()
	defer q.hmu.Unlock()
	since, ok := q.holdStarts[name]
	return since, ok
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
	if wait := a.throttledUntil.Sub(q.opts.Now()); wait > 0 {
		return nil, wait
	}
	return q.pick(a, probe || outage, a.probeAt)
}

// throttle records that the provider asked, in results, to wait before
// anything more goes out through up's credentials, and reports whether it
// did: the connection then ends, and the mailbox waits (Graph's
// Retry-After applies per app and mailbox, not per message).
func (q *Queue) throttle(up *account, results []Result) bool {
	var wait time.Duration
	for _, r := range results {
		if r.State == RcptPending {
			wait = max(wait, r.RetryAfter)
		}
	}
	if wait == 0 {
		return false
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	if until := q.opts.Now().Add(wait); until.After(up.throttledUntil) {
		up.throttledUntil = until
	}
	return true
}

// throttled reports whether up's credentials must wait (throttle).
func (q *Queue) throttled(up *account) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.opts.Now().Before(up.throttledUntil)
}

// pick returns a's messages to attempt now, oldest first, or how long to
// wait: every queued message whose NextAttempt has come, or, to probe an
// upstream in trouble, only the oldest, at probeAt. q.mu is held.
func (q *Queue) pick(a *account, probe bool, probeAt time.Time) ([]string, time.Duration) {
	now := q.opts.Now()
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
		if now.Before(probeAt) {
			return nil, probeAt.Sub(now)
		}
		return ids, 0
	}
	if len(ids) == 0 && next == never {
		return nil, time.Hour
	}
	sort.Strings(ids) // IDs begin with the time: oldest first
	return ids, next
}

// deliverBatch delivers a's messages ids over up to the account's
// connection limit, reusing each connection for several messages; with a
// fallback plan, through the fallback account, within its limit.
func (q *Queue) deliverBatch(ctx context.Context, a *account, fb *fallbackPlan, ids []string) {
	creds, up := q.opts.Accounts(a.name), a
	if fb != nil {
		creds, up = fb.creds, fb.via
	}
	if creds == nil {
		q.holdUnconfigured(a)
		return
	}
	// The connections the account's credentials may have open are
	// shared with the accounts it is the fallback of: wait for one, take
	// what more are free.
	limit := min(maxConns(creds.Config), len(ids))
	if !q.takeConn(ctx, up, limit, true) {
		return // relayd is stopping
	}
	conns := 1
	for conns < limit && q.takeConn(ctx, up, limit, false) {
		conns++
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
	var wg sync.WaitGroup
	var panicked atomic.Bool
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer q.dropConn(up)
			defer func() {
				if v := recover(); v != nil {
					health.Recovered(q.log, q.health(a), "connecting to the upstream server", v)
					panicked.Store(true)
				}
			}()
			q.runConnection(ctx, a, fb, creds, take)
		}()
	}
	wg.Wait()
	q.mu.Lock()
	for _, id := range ids {
		delete(q.busy, id)
		if e := q.entries[id]; panicked.Load() && e != nil && e.State == StateQueued {
			// A fault that recurs on every connection must not spin:
			// the batch waits as after a temporary failure.
			e.NextAttempt = q.opts.Now().Add(q.opts.RetryMin)
		}
	}
	q.mu.Unlock()
	if c := outage(creds.Health); c != nil && fb == nil {
		// The sender reads this in the DSN: the error, not the advice
		// for the admin.
		q.expireOverdue(a, fmt.Sprintf("the upstream mail server could not be reached (%v)", c.Err))
	}
}

// takeConn reserves one of the upstream connections of account up's
// credentials, limit at most; wait says whether to wait for one (until
// ctx ends) when none is free. It reports whether it got one; dropConn
// gives it back.
func (q *Queue) takeConn(ctx context.Context, up *account, limit int, wait bool) bool {
	for {
		q.mu.Lock()
		if up.conns < limit {
			up.conns++
			q.mu.Unlock()
			return true
		}
		if up.connFreed == nil {
			up.connFreed = make(chan struct{})
		}
		freed := up.connFreed
		q.mu.Unlock()
		if !wait {
			return false
		}
		select {
		case <-freed:
		case <-ctx.Done():
			return false
		}
	}
}

// dropConn gives back a connection takeConn reserved.
func (q *Queue) dropConn(up *account) {
	q.mu.Lock()
	defer q.mu.Unlock()
	up.conns--
	if up.connFreed != nil {
		close(up.connFreed)
		up.connFreed = nil
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

// runConnection opens one upstream connection with creds (a's, or with a
// fallback plan its fallback account's) and delivers a's messages from
// take over it until there are none or the connection fails. What the
// login says is about the account whose credentials it used.
func (q *Queue) runConnection(ctx context.Context, a *account, fb *fallbackPlan, creds *auth.Account, take func() string) {
	up := a
	if fb != nil {
		up = fb.via
	}
	c, err := q.opts.Transport.Open(ctx, creds)
	if err != nil {
		if ctx.Err() != nil {
			return // relayd is stopping: nothing about the account
		}
		he := health.AsError(err)
		switch {
		case he == nil:
			q.outage(up, creds, err)
		case he.Outage():
			q.deferAccount(up, creds, he)
		default:
			q.holdAccount(up, "", he) // reported by the login
		}
		if fb != nil {
			q.log.Warn("the fallback account could not log in either; the account's mail stays held", "account", a.name,
				"fallback", fb.name, "err", err)
		}
		return
	}
	defer c.Close()
	if inOutage(creds.Health) || !creds.Health.HeldSince().IsZero() {
		q.release(up.name, "the upstream answers again")
	}
	for {
		if ctx.Err() != nil {
			return // stopping: start no new delivery
		}
		if q.throttled(up) {
			return // the provider asked to wait: the rest stays due
		}
		id := take()
		if id == "" {
			return
		}
		q.pace(ctx, up, creds.Config)
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
		if !q.attempt(ctx, a, fb, c, snapshot) {
			return
		}
		if err := c.Reset(); err != nil {
			return
		}
	}
}

// attempt delivers one message on c (with a fallback plan, a connection
// of the fallback account) and records the outcome. It reports whether c
// may carry the next message. A panic while handling the message would
// recur on every retry: the message is held with the reason recorded, and
// the rest of the queue flows.
func (q *Queue) attempt(ctx context.Context, a *account, fb *fallbackPlan, c Conn, e *Entry) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(q.log, q.health(a), "delivering message "+e.ID, v)
			q.quarantine(e.ID, fmt.Sprintf("relayd hit an internal error delivering it (%v); after an upgrade, 'relayd queue release %s' tries again", v, e.ID))
			ok = false // the connection's state is unknown
		}
	}()
	fault.Hit("deliver")
	if fb != nil {
		return q.attemptFallback(ctx, a, fb, c, e)
	}
	start := time.Now()
	pending := e.pending()
	m := &Message{ID: e.ID, From: e.From, Size: e.Size, Open: func() (io.ReadCloser, error) { return q.spool.Open(e.ID) }}
	for _, i := range pending {
		m.To = append(m.To, e.Recipients[i].Addr)
	}
	results, connErr := c.Deliver(ctx, m)
	q.finish(a, nil, e.ID, pending, results, connErr, time.Since(start))
	if q.throttle(a, results) {
		return false
	}
	return connErr == nil
}

// attemptFallback delivers a's message e through its fallback account on
// c in the mode that applies now. In keep mode an upstream that refuses to
// send as the account (SendAsDenied) switches the account's fallback to
// rewrite, and the refused recipients are tried again at once, rewritten,
// on the same connection: nothing bounces for it.
func (q *Queue) attemptFallback(ctx context.Context, a *account, fb *fallbackPlan, c Conn, e *Entry) bool {
	start := time.Now()
	pending := e.pending()
	mode := fb.mode
	if mode == config.FallbackKeep && q.forcedRewrite(a.name) {
		mode = config.FallbackRewrite // another connection met SendAsDenied
	}
	deliver := func(mode string, idx []int) ([]Result, error) {
		m, err := q.fallbackMessage(e, fb.creds.Config.Email, mode)
		if err != nil {
			q.log.Error("could not prepare the copy to send through the fallback account; it is retried", "account", a.name,
				"fallback", fb.name, "id", e.ID, "err", err)
			return nil, err
		}
		for _, i := range idx {
			m.To = append(m.To, e.Recipients[i].Addr)
		}
		return c.Deliver(ctx, m)
	}
	results, connErr := deliver(mode, pending)
	if mode == config.FallbackKeep {
		var denied []int // positions in results
		for k, r := range results {
			if r.State == RcptFailed && SendAsDenied(r) {
				denied = append(denied, k)
			}
		}
		if len(denied) > 0 {
			q.sendAsRefused(a, fb, e.ID, results[denied[0]])
			mode = config.FallbackRewrite
			for _, k := range denied {
				r := results[k]
				results[k] = Result{State: RcptPending, Reply: r.Reply, Code: r.Code, Enhanced: r.Enhanced}
			}
			if connErr == nil {
				connErr = c.Reset()
			}
			if connErr == nil {
				idx := make([]int, len(denied))
				for j, k := range denied {
					idx[j] = pending[k]
				}
				var again []Result
				again, connErr = deliver(mode, idx)
				for j, k := range denied {
					if j < len(again) {
						results[k] = again[j]
					}
				}
			}
		}
	}
	q.finish(a, &fallbackSend{fallbackPlan: fb, mode: mode}, e.ID, pending, results, connErr, time.Since(start))
	if q.throttle(fb.via, results) {
		return false
	}
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
		q.finish(a, nil, id, pending, results, nil, 0)
		q.mu.Lock()
		delete(q.busy, id)
		q.mu.Unlock()
	}
}
