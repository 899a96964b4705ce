package queue

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
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
		q.checkHold(a, h)
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

// checkHold asks the account's condition whether its mail may go: a
// condition that needs a person (reported by the token source or the SMTP
// upstream) holds queued mail without a doomed attempt; a hold whose
// condition is gone (a new grant, a successful refresh) ends, and the mail
// is due now.
func (q *Queue) checkHold(a *account, h *health.Account) {
	c := h.Worst(health.SourceToken, health.SourceSMTP)
	held := !h.HeldSince().IsZero()
	switch {
	case c != nil && c.State.NeedsAttention() && !c.Outage() && !held && q.hasQueued(a):
		q.holdAccount(a, "", c)
	case held && c == nil:
		q.mu.Lock()
		released := q.resume(a, h) // announces the release
		q.mu.Unlock()
		if released {
			q.log.Info("account released: delivering its held mail now", "account", a.name, "why", "its condition is over")
		}
	}
}

// hasQueued reports whether a has mail waiting that no admin held.
func (q *Queue) hasQueued(a *account) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if a.adminHold {
		return false
	}
	for _, e := range a.entries {
		if e.State == StateQueued && !e.AdminHold {
			return true
		}
	}
	return false
}

// due returns the messages to attempt now, oldest first, or how long to
// wait. It looks only at the account's own messages, and at none while the
// account is held: it runs on every submission.
func (q *Queue) due(a *account, h *health.Account) ([]string, time.Duration) {
	held := !h.HeldSince().IsZero()
	if held {
		if c := h.Worst(health.SourceToken, health.SourceSMTP); c != nil && c.State.NeedsAttention() && !c.Outage() {
			return nil, time.Hour // until the condition changes
		}
	}
	outage := inOutage(h)
	q.mu.Lock()
	defer q.mu.Unlock()
	if a.adminHold {
		return nil, time.Hour // until an admin releases it
	}
	now := q.opts.Now()
	probe := held || outage
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

// accountError is an account condition met while logging in upstream: the
// account's mail is held. src is where it was seen, to report it to the
// account's health; empty when the token source reported it already.
type accountError struct {
	src health.Source
	err *health.Error
}

func (e *accountError) Error() string { return e.err.Error() }
func (e *accountError) Unwrap() error { return e.err }

func errText(err error) string {
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return replyText(se)
	}
	if err == nil {
		return ""
	}
	return err.Error()
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
}

// maxConns is the account's limit of concurrent upstream SMTP connections
// (config fills the provider's, e.g. Exchange Online's 3 per mailbox); 2
// when nothing says.
func maxConns(a *config.Account) int {
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
	c, err := q.connect(ctx, creds)
	if err != nil {
		var ae *accountError
		if errors.As(err, &ae) {
			q.holdAccount(a, ae.src, ae.err)
		} else {
			q.outage(a, creds, err)
		}
		return
	}
	defer c.Close()
	if inOutage(creds.Health) || !creds.Health.HeldSince().IsZero() {
		q.release(a.name, "the upstream answers again")
	}
	for {
		id := take()
		if id == "" {
			c.Quit()
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
		if !q.attempt(a, c, snapshot) {
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
func (q *Queue) attempt(a *account, c *upstream, e *Entry) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(q.log, q.health(a), "delivering message "+e.ID, v)
			q.quarantine(e.ID, fmt.Sprintf("relayd hit an internal error delivering it (%v); after an upgrade, 'relayd queue release %s' tries again", v, e.ID))
			ok = false // the connection's state is unknown
		}
	}()
	q.failpoint("deliver")
	start := time.Now()
	results, connErr := q.deliverOne(c, e)
	q.finish(a, e.ID, results, connErr, time.Since(start))
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
	q.mu.Unlock()
	if err := q.spool.Update(snapshot); err != nil {
		q.log.Error("could not record the hold of a message that made relayd fail; it is held until restart", "id", id, "err", err)
	}
	q.event(EventHeld, id, snapshot.Account)
}

func (q *Queue) failpoint(name string) {
	if q.opts.Failpoint != nil {
		q.opts.Failpoint(name)
	}
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

// outage records a connection or TLS failure: the account's health makes
// it degraded (smtp_unreachable), disconnected once it outlasts the retry
// budget. Nothing is held: messages keep aging, and a probe checks the
// upstream again after a backoff.
func (q *Queue) outage(a *account, creds *auth.Account, err error) {
	first := !inOutage(creds.Health)
	creds.Health.Fail(health.SourceSMTP, health.Unreachable(health.SourceSMTP, creds.Config.SMTPServer, err))
	q.mu.Lock()
	a.backoff = min(max(2*a.backoff, q.opts.RetryMin), q.opts.RetryMax)
	if first {
		a.backoff = q.opts.RetryMin
	}
	a.probeAt = q.opts.Now().Add(a.backoff)
	backoff := a.backoff
	q.mu.Unlock()
	q.log.Warn("upstream SMTP server unreachable; mail stays queued and is retried", "account", a.name,
		"upstream", creds.Config.SMTPServer, "err", err, "retry_in", backoff)
	q.event(EventDeferred, "", a.name)
}

// connect dials the account's SMTP server and logs in. The token comes
// first: with a dead grant there is no point in dialing. A refused token is
// refreshed once and tried again on a fresh connection (a server may drop
// the connection after a refusal); a refusal there, or a connection dropped
// during that second AUTH, is the account's condition, never an outage.
func (q *Queue) connect(ctx context.Context, creds *auth.Account) (*upstream, error) {
	cfg := creds.Config
	host, _, _ := net.SplitHostPort(cfg.SMTPServer)
	if creds.Tokens == nil {
		c, err := q.dial(ctx, creds)
		if err != nil {
			return nil, err
		}
		if err := c.auth(sasl.NewPlainClient("", cfg.Login, creds.Password)); err != nil {
			c.Close()
			var se *smtp.SMTPError
			if !errors.As(err, &se) {
				return nil, fmt.Errorf("AUTH at %s: %w", host, err)
			}
			return nil, authError(cfg, host, err, health.ReasonUpstreamRejectedPassword,
				fmt.Sprintf("%s refused the password in %s: put the right one there and restart relayd", host, cfg.PasswordFile))
		}
		return c, nil
	}
	tok, err := creds.Tokens.Token(ctx)
	if err != nil {
		return nil, tokenError(err)
	}
	c, err := q.dial(ctx, creds)
	if err != nil {
		return nil, err
	}
	err = c.auth(auth.NewXOAUTH2Client(cfg.Email, tok))
	if err == nil {
		return c, nil
	}
	c.Close()
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return nil, fmt.Errorf("AUTH at %s: %w", host, err)
	}
	reauth := fmt.Sprintf("%s refused a fresh token: run 'relayd authorize %s'", host, cfg.Name)
	if isSMTPAuthDisabled(se) || se.Code/100 == 4 {
		return nil, authError(cfg, host, err, health.ReasonUpstreamRejectedToken, reauth)
	}
	q.log.Info("upstream rejected the access token; refreshing once and retrying on a new connection", "account", cfg.Name, "reply", replyText(se))
	if tok, err = creds.Tokens.Refresh(ctx, tok); err != nil {
		return nil, tokenError(err)
	}
	if c, err = q.dial(ctx, creds); err != nil {
		return nil, err
	}
	err = c.auth(auth.NewXOAUTH2Client(cfg.Email, tok))
	if err == nil {
		return c, nil
	}
	c.Close()
	if !errors.As(err, &se) {
		// The server refused this account's token a moment ago and now
		// drops the connection during AUTH: that is about the account.
		err = fmt.Errorf("connection lost during AUTH after %s: %w", replyText(se), err)
	} else if isSMTPAuthDisabled(se) || se.Code/100 == 4 {
		return nil, authError(cfg, host, err, health.ReasonUpstreamRejectedToken, reauth)
	}
	// RejectedByUpstream reports it to the account's health.
	return nil, &accountError{err: creds.Tokens.RejectedByUpstream(health.SourceSMTP, host, errText(err))}
}

// dial connects to the account's SMTP server and says EHLO: implicit TLS,
// STARTTLS or plaintext as configured. Errors are outages.
func (q *Queue) dial(ctx context.Context, creds *auth.Account) (*upstream, error) {
	cfg := creds.Config
	addr := cfg.SMTPServer
	host, _, _ := net.SplitHostPort(addr)
	dctx, cancel := context.WithTimeout(ctx, q.opts.Timeout)
	defer cancel()
	conn, err := q.opts.Dialer(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	var g *authGuard
	switch cfg.SMTPSecurity {
	case config.SecurityTLS:
		tc := tls.Client(conn, creds.TLSConfig(host))
		if err := tc.HandshakeContext(dctx); err != nil {
			conn.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		g = newAuthGuard(tc)
	case config.SecurityNone:
		g = newAuthGuard(conn)
	default:
		tc, err := startTLS(conn, q.opts.Hostname, creds.TLSConfig(host), q.opts.Timeout)
		if err != nil {
			conn.Close()
			return nil, fmt.Errorf("STARTTLS with %s: %w", addr, err)
		}
		g = newAuthGuard(tc)
		// The session starts anew over TLS (RFC 3207 §4.2): go-smtp's
		// client waits for a greeting that the server does not repeat.
		g.inject("220 " + host + " ESMTP (TLS established by relayd)\r\n")
	}
	c := smtp.NewClient(g)
	c.CommandTimeout = q.opts.Timeout
	c.SubmissionTimeout = q.opts.Timeout
	if err := c.Hello(q.opts.Hostname); err != nil {
		c.Close()
		return nil, fmt.Errorf("EHLO to %s: %w", addr, err)
	}
	return &upstream{Client: c, guard: g}, nil
}

// upstream is a connection to an upstream SMTP server.
type upstream struct {
	*smtp.Client
	guard *authGuard
}

// auth runs AUTH with the stray-"*" guard armed.
func (u *upstream) auth(sc sasl.Client) error {
	u.guard.armed.Store(true)
	defer u.guard.armed.Store(false)
	return u.Auth(sc)
}

// tokenError is a failure to get an access token: an account condition
// the token source reported.
func tokenError(err error) error {
	if he := health.AsError(err); he != nil {
		return &accountError{err: he} // reported by the token source
	}
	return &accountError{src: health.SourceSMTP, err: &health.Error{
		State: health.StateDegraded, Reason: health.ReasonTokenEndpointUnreachable,
		Advice: "could not get an access token; relayd retries", Err: err}}
}

// isSMTPAuthDisabled recognises Exchange's 535 5.7.139: SMTP AUTH is
// switched off for the tenant or the mailbox.
func isSMTPAuthDisabled(se *smtp.SMTPError) bool {
	return provider.SMTPAuthDisabled(se.Code, se.EnhancedCode, se.Message)
}

// authError turns a refused AUTH into an account condition: reason says
// why when the server's reply does not (a refused token or password).
func authError(cfg *config.Account, host string, err error, reason health.Reason, advice string) error {
	he := &health.Error{State: health.StateNeedsReauth, Reason: reason, Advice: advice, Err: err}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		he.Err = errors.New("upstream said: " + replyText(se))
		switch {
		case isSMTPAuthDisabled(se):
			he.State, he.Reason = health.StateNeedsAdmin, health.ReasonSMTPAuthDisabled
			he.Advice = fmt.Sprintf(
				"%s has SMTP AUTH switched off for %s (535 5.7.139): an Exchange admin must enable it, e.g. Set-CASMailbox -Identity %s -SmtpClientAuthenticationDisabled $false, or for the tenant with Set-TransportConfig -SmtpClientAuthenticationDisabled $false; then run 'relayd queue release %s'",
				host, cfg.Email, cfg.Email, cfg.Name)
		case se.Code/100 == 4:
			he.State, he.Reason = health.StateDegraded, health.ReasonUpstreamAuthDeferred
			he.Advice = host + " refused AUTH for now; relayd retries"
		}
	}
	if he.Reason == health.ReasonUpstreamRejectedPassword && he.State == health.StateNeedsReauth {
		he.State = health.StateNeedsAdmin // a new grant does not fix a password
	}
	return &accountError{src: health.SourceSMTP, err: he}
}

// outcome of one recipient: its new state and the upstream's reply, as
// text for people and as codes for DSNs and classification.
type outcome struct {
	idx      int
	state    RcptState // RcptSent, RcptFailed, RcptPending (temporary)
	reply    string
	code     int
	enhanced string // "5.1.1"; empty when the server sent none
}

// at returns o for recipient i.
func (o outcome) at(i int) outcome {
	o.idx = i
	return o
}

// deliverOne sends e on c. It returns each pending recipient's outcome, and
// a non-nil error when the connection broke.
func (q *Queue) deliverOne(c *upstream, e *Entry) ([]outcome, error) {
	pending := e.pending()
	all := func(o outcome) []outcome {
		var out []outcome
		for _, i := range pending {
			out = append(out, o.at(i))
		}
		return out
	}
	if err := c.Mail(e.From, &smtp.MailOptions{Size: e.Size}); err != nil {
		o, broken := classify(err)
		if broken {
			return all(o), err
		}
		return all(o), nil
	}
	var results, accepted []outcome
	for _, i := range pending {
		o, broken := classify(c.Rcpt(e.Recipients[i].Addr, nil))
		if broken {
			return all(o), o.err()
		}
		if o.state == RcptSent {
			accepted = append(accepted, o.at(i))
		} else {
			results = append(results, o.at(i))
		}
	}
	if len(accepted) == 0 {
		return results, nil
	}
	w, err := c.Data()
	if err != nil {
		o, broken := classify(err)
		for _, a := range accepted {
			results = append(results, o.at(a.idx))
		}
		if broken {
			return results, err
		}
		return results, nil
	}
	msg, err := q.spool.Open(e.ID)
	if err != nil {
		w.Close()
		return all(outcome{state: RcptPending, reply: "reading the spool: " + err.Error()}), err
	}
	_, err = io.Copy(w, msg)
	msg.Close()
	if err == nil {
		err = w.Close()
	} else {
		w.Close()
	}
	o, broken := classify(err)
	if o.state == RcptSent {
		o.reply, o.code = "250 accepted", 250
		q.failpoint("after-upstream-250")
	}
	for _, a := range accepted {
		results = append(results, o.at(a.idx))
	}
	if broken {
		return results, err
	}
	return results, nil
}

// err is the connection failure a broken outcome records.
func (o outcome) err() error { return errors.New(o.reply) }

// classify maps an upstream reply to a recipient outcome: sent, failed
// (permanent) or pending (retry), by its codes, never its text. Provider
// throttles are temporary even when they carry a 5xx code. broken reports
// a connection failure (no reply).
func classify(err error) (o outcome, broken bool) {
	if err == nil {
		return outcome{state: RcptSent}, false
	}
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return outcome{state: RcptPending, reply: err.Error()}, true
	}
	o = outcome{reply: replyText(se), code: se.Code}
	if se.EnhancedCode != smtp.NoEnhancedCode && se.EnhancedCode != (smtp.EnhancedCode{}) {
		e := se.EnhancedCode
		o.enhanced = fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
	}
	switch {
	case se.Code/100 == 2:
		o.state = RcptSent
	case se.Code/100 == 4 || isThrottle(se):
		o.state = RcptPending
	default:
		o.state = RcptFailed
	}
	return o, false
}

// replyText renders an SMTP reply as the server sent it: "550 5.1.1 text".
func replyText(se *smtp.SMTPError) string {
	if se.EnhancedCode == smtp.NoEnhancedCode || se.EnhancedCode == (smtp.EnhancedCode{}) {
		return fmt.Sprintf("%d %s", se.Code, se.Message)
	}
	e := se.EnhancedCode
	return fmt.Sprintf("%d %d.%d.%d %s", se.Code, e[0], e[1], e[2], se.Message)
}

// isThrottle recognises provider quota and throttling replies, which defer
// rather than bounce: Exchange's 554 5.2.0 ...SubmissionQuotaExceeded and
// Gmail's 550 5.4.5 daily sending limit.
func isThrottle(se *smtp.SMTPError) bool {
	return provider.SMTPThrottle(se.Code, se.EnhancedCode, se.Message)
}

// finish records the outcome of an attempt.
func (q *Queue) finish(a *account, id string, results []outcome, connErr error, took time.Duration) {
	now := q.opts.Now()
	q.mu.Lock()
	e := q.entries[id]
	if e == nil {
		q.mu.Unlock()
		return
	}
	var failed []Recipient
	var lastTemp string
	for _, o := range results {
		r := &e.Recipients[o.idx]
		r.Reply, r.Code, r.Enhanced = o.reply, o.code, o.enhanced
		switch o.state {
		case RcptSent:
			r.State = RcptSent
		case RcptFailed:
			r.State = RcptFailed
			failed = append(failed, *r)
		default:
			lastTemp = o.reply
		}
	}
	e.Attempts++
	e.LastAttempt = now
	remaining := len(e.pending())
	if remaining > 0 && e.age(now) > q.opts.Lifetime {
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
		q.remove(e)
	}
	q.mu.Unlock()

	if kind == EventDelivered {
		if err := q.spool.Remove(id); err != nil {
			q.log.Error("delivered message could not be removed from the spool; it may be sent again", "id", id, "err", err)
		}
		q.log.Info("delivered", "id", id, "account", a.name, "recipients", len(snapshot.Recipients),
			"reply", lastReply(results), "duration", took.Round(time.Millisecond))
	} else {
		if err := q.spool.Update(snapshot); err != nil {
			q.log.Error("could not record a delivery attempt in the spool", "id", id, "err", err)
		}
		if kind == EventDeferred {
			q.log.Info("delivery deferred", "id", id, "account", a.name, "reply", snapshot.LastError, "next_attempt", snapshot.NextAttempt,
				"duration", took.Round(time.Millisecond))
		}
	}
	if len(failed) > 0 {
		q.log.Warn("delivery failed permanently", "id", id, "account", a.name, "recipients", len(failed), "reply", failed[0].Reply)
		if !snapshot.DSN {
			q.bounce(snapshot, failed)
		}
	}
	q.event(kind, id, a.name)
}

// lastReply is the upstream's last reply in results, for the log.
func lastReply(results []outcome) string {
	for i := len(results) - 1; i >= 0; i-- {
		if results[i].reply != "" {
			return results[i].reply
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
