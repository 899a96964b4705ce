package proxy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/registry"
	"github.com/relayd/relayd/upstream"
)

// Warm upstream connections. A login through relayd pays, upstream, a TCP
// handshake, a TLS handshake, the greeting (and STARTTLS or CAPABILITY),
// then AUTHENTICATE: about six round trips to a provider 20-80 ms away.
// All but the last can be done before the client asks. For each account
// with incoming mail a pool keeps WarmConnections connections dialed,
// TLS-handshaked (resuming the account's TLS session) and greeted, not yet
// authenticated; a login takes one through upstream.Login's dial function,
// so the one-login rule (refresh once, retry on a fresh connection,
// classify) is the same for warm and cold connections.
//
// A warm connection is replaced before the provider's pre-auth idle
// timeout ends it (Exchange: 60 s, and commands do not extend it), and
// checked without blocking before it is handed out: one the upstream
// closed, or that holds bytes nobody asked for, is closed and the login
// takes another or dials as before. The pool never dials for an account
// whose condition needs a person (needs_reauth, needs_admin) or whose
// provider is unreachable (disconnected), keeps its connections together
// with the account's open sessions within imap_connections, and backs off
// when dials fail.

// warmConn is an upstream connection a pool can keep: greeted, not
// authenticated.
type warmConn interface {
	upstream.Conn
	// alive reports, without blocking, whether the connection is still
	// open with nothing unread; false means it must not be used.
	alive() bool
	// clearDeadline removes the dial's deadline while the connection
	// waits in the pool.
	clearDeadline()
}

// WarmOptions tune the warm connection pools. Zero values take the
// defaults named.
type WarmOptions struct {
	// Lifetime is how long a warm connection of account a may wait before
	// it is replaced. Default: WarmLifetime.
	Lifetime func(a *config.Account) time.Duration
	// BackoffMin and BackoffMax bound the wait after a failed dial, which
	// doubles per failure. Defaults 1s and 5m.
	BackoffMin, BackoffMax time.Duration
}

// WarmLifetime is how long a warm connection of a waits: 10 s less than
// its provider's pre-auth idle timeout, or 50 s when that is unknown
// (servers commonly allow 60 s or more; Dovecot 3 minutes).
func WarmLifetime(a *config.Account) time.Duration {
	if t := a.UpstreamPreauthTimeout; t > 20*time.Second {
		return t - 10*time.Second
	}
	if t := a.UpstreamPreauthTimeout; t > 0 {
		return t / 2
	}
	return 50 * time.Second
}

// WarmStatus is what status shows of an account's warm connections of
// one protocol.
type WarmStatus struct {
	// Ready connections wait for a login; Target is warm_connections (0
	// while the account's condition holds the pool, or before its first
	// POP3 login).
	Ready  int `json:"ready"`
	Target int `json:"target"`
	// Served logins took a warm connection; Missed found none ready;
	// Discarded connections were closed by the upstream (or held
	// unexpected bytes) when a login wanted them; DialFailures counts
	// failed dials since the pool started.
	Served       uint64 `json:"served"`
	Missed       uint64 `json:"missed"`
	Discarded    uint64 `json:"discarded"`
	DialFailures uint64 `json:"dial_failures"`
}

// warmPool keeps the warm connections of every account of one protocol.
// Its methods are safe for use from any goroutine.
type warmPool[C warmConn] struct {
	proto    string // "IMAP", "POP3": for log lines
	log      *slog.Logger
	accounts *registry.Registry
	opts     WarmOptions
	// dial dials, handshakes and reads the greeting of a new connection.
	dial func(ctx context.Context, a *registry.Account) (C, error)
	// server is the account's upstream server address ("" for none).
	server func(a *config.Account) string
	// open and max are the account's open sessions and its connection
	// limit (0: none).
	open func(a *registry.Account) int64
	max  func(a *config.Account) int
	// lazy: an account's pool starts at its first login (POP3), not at
	// sync.
	lazy bool

	mu     sync.Mutex
	accts  map[string]*warmAccount[C]
	used   map[string]bool // lazy pools: accounts that logged in
	closed bool
	// notify is closed at the next change of any pool's connections
	// (for tests, which wait for it instead of sleeping).
	notify chan struct{}
}

// signalLocked closes notify. p.mu is held.
func (p *warmPool[C]) signalLocked() {
	if p.notify != nil {
		close(p.notify)
		p.notify = nil
	}
}

// changed returns a channel closed at the next change of any pool's
// connections: one ready, taken, replaced or drained.
func (p *warmPool[C]) changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.notify == nil {
		p.notify = make(chan struct{})
	}
	return p.notify
}

// warmAccount is one account's pool, run by one goroutine.
type warmAccount[C warmConn] struct {
	acct     *registry.Account
	target   int
	lifetime time.Duration
	ready    []pooled[C] // oldest first; p.mu guards
	wake     chan struct{}
	cancel   context.CancelFunc
	done     chan struct{}
	stats    WarmStatus // counters; p.mu guards
}

type pooled[C warmConn] struct {
	c    C
	born time.Time
}

func newWarmPool[C warmConn](p *warmPool[C]) *warmPool[C] {
	if p.opts.Lifetime == nil {
		p.opts.Lifetime = WarmLifetime
	}
	if p.opts.BackoffMin <= 0 {
		p.opts.BackoffMin = time.Second
	}
	if p.opts.BackoffMax <= 0 {
		p.opts.BackoffMax = 5 * time.Minute
	}
	p.accts = map[string]*warmAccount[C]{}
	p.used = map[string]bool{}
	return p
}

// sync starts the pools of the running accounts that want one, and
// drains those of accounts a reload removed or edited (an edited account
// is a new *registry.Account: its pool starts again with its new
// configuration). An unchanged account keeps its pool.
func (p *warmPool[C]) sync() {
	var stop []*warmAccount[C]
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	running := p.accounts.Map()
	for name, w := range p.accts {
		if a := running[name]; a != w.acct || p.targetOf(a) == 0 {
			stop = append(stop, w)
			delete(p.accts, name)
		}
	}
	for name, a := range running {
		if p.accts[name] == nil && p.targetOf(a) > 0 && (!p.lazy || p.used[name]) {
			p.startLocked(a)
		}
	}
	for name := range p.used {
		if running[name] == nil {
			delete(p.used, name)
		}
	}
	p.mu.Unlock()
	for _, w := range stop {
		w.cancel()
		<-w.done
	}
}

// targetOf is how many warm connections a wants; a may be nil.
func (p *warmPool[C]) targetOf(a *registry.Account) int {
	if a == nil || !a.Config.Direction.Incoming() || p.server(a.Config) == "" {
		return 0
	}
	return a.Config.WarmConnections
}

// startLocked starts a's pool. p.mu is held.
func (p *warmPool[C]) startLocked(a *registry.Account) {
	ctx, cancel := context.WithCancel(context.Background())
	w := &warmAccount[C]{acct: a, target: p.targetOf(a), lifetime: p.opts.Lifetime(a.Config),
		wake: make(chan struct{}, 1), cancel: cancel, done: make(chan struct{})}
	p.accts[a.Config.Name] = w
	go p.run(ctx, w)
}

// close drains every pool and starts no more: a shutdown.
func (p *warmPool[C]) close() {
	p.mu.Lock()
	p.closed = true
	var stop []*warmAccount[C]
	for name, w := range p.accts {
		stop = append(stop, w)
		delete(p.accts, name)
	}
	p.mu.Unlock()
	for _, w := range stop {
		w.cancel()
		<-w.done
	}
}

// take hands out a warm connection of a, checked alive, or reports false:
// the caller dials as before. Either way the pool refills in the
// background.
func (p *warmPool[C]) take(a *registry.Account) (C, bool) {
	var zero C
	p.mu.Lock()
	w := p.accts[a.Config.Name]
	if w == nil || w.acct != a {
		if w == nil && p.lazy && !p.closed && !p.used[a.Config.Name] && p.targetOf(a) > 0 &&
			p.accounts.Get(a.Config.Name) == a {
			p.used[a.Config.Name] = true
			p.startLocked(a)
		}
		p.mu.Unlock()
		return zero, false
	}
	defer w.poke()
	for len(w.ready) > 0 {
		pc := w.ready[0]
		w.ready = w.ready[1:]
		fresh := time.Since(pc.born) < w.lifetime
		p.mu.Unlock()
		if fresh && pc.c.alive() {
			p.mu.Lock()
			w.stats.Served++
			p.signalLocked()
			p.mu.Unlock()
			return pc.c, true
		}
		discard(pc.c)
		p.mu.Lock()
		if fresh {
			w.stats.Discarded++
			p.log.Info("warm "+p.proto+" connection closed by the upstream before use; dialing another", "account", a.Config.Name)
		}
	}
	w.stats.Missed++
	p.signalLocked()
	p.mu.Unlock()
	return zero, false
}

// poke wakes the pool's goroutine without waiting.
func (w *warmAccount[C]) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// status is what status shows of a's pool.
func (p *warmPool[C]) status(name string) (WarmStatus, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	w := p.accts[name]
	if w == nil {
		return WarmStatus{}, false
	}
	st := w.stats
	st.Ready = len(w.ready)
	if held(w.acct) {
		st.Target = 0
	} else {
		st.Target = w.target
	}
	return st, true
}

// held reports whether a's condition keeps its pool empty: a person must
// act (needs_reauth, needs_admin), or the provider has been unreachable
// for the whole retry budget (disconnected).
func held(a *registry.Account) bool {
	switch a.Health.State() {
	case health.StateNeedsReauth, health.StateNeedsAdmin, health.StateDisconnected:
		return true
	}
	return false
}

// run keeps w's connections until ctx ends, then closes them.
func (p *warmPool[C]) run(ctx context.Context, w *warmAccount[C]) {
	defer close(w.done)
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(p.log, w.acct.Health, "keeping warm "+p.proto+" connections", v)
		}
		p.mu.Lock()
		l := w.ready
		w.ready = nil
		p.mu.Unlock()
		for _, pc := range l {
			discard(pc.c)
		}
		p.mu.Lock()
		p.signalLocked()
		p.mu.Unlock()
	}()
	a := w.acct
	log := p.log.With("account", a.Config.Name)
	var (
		failures  int
		notBefore time.Time // backoff after a failed dial
		refreshed <-chan struct{}
		refreshAt time.Time // when the access token is due for a refresh ahead
	)
	for {
		changed := a.Health.Changed()
		now := time.Now()
		isHeld := held(a)
		var expired []pooled[C]
		p.mu.Lock()
		keep := w.ready[:0:0]
		for _, pc := range w.ready {
			if isHeld || now.Sub(pc.born) >= w.lifetime {
				expired = append(expired, pc)
			} else {
				keep = append(keep, pc)
			}
		}
		w.ready = keep
		need := p.needLocked(w, now)
		p.mu.Unlock()
		for _, pc := range expired {
			discard(pc.c)
		}
		if len(expired) > 0 {
			p.mu.Lock()
			p.signalLocked()
			p.mu.Unlock()
		}
		if !isHeld && refreshed == nil && w.acct.Tokens != nil {
			refreshed, refreshAt = w.acct.Tokens.RefreshAhead(max(time.Minute, w.lifetime))
		}
		if !isHeld && need > 0 && !now.Before(notBefore) {
			c, err := p.dial(ctx, a)
			if ctx.Err() != nil {
				if err == nil {
					discard(c)
				}
				return
			}
			if err != nil {
				failures++
				wait := min(p.opts.BackoffMin<<min(failures-1, 20), p.opts.BackoffMax)
				notBefore = time.Now().Add(wait)
				p.mu.Lock()
				w.stats.DialFailures++
				p.signalLocked()
				p.mu.Unlock()
				lvl := slog.LevelDebug
				if failures == 1 {
					lvl = slog.LevelWarn
				}
				log.Log(ctx, lvl, "dialing a warm "+p.proto+" connection failed; logins dial as they come, the pool tries again", "err", err, "retry_in", wait)
				continue
			}
			failures = 0
			c.clearDeadline()
			p.mu.Lock()
			kept := p.needLocked(w, time.Now()) > 0
			if kept {
				w.ready = append(w.ready, pooled[C]{c: c, born: time.Now()})
				p.signalLocked()
			}
			p.mu.Unlock()
			if !kept {
				discard(c) // the room went to sessions meanwhile
			}
			continue
		}
		// Sleep until the next connection must be replaced (or a
		// replacement dialed), the backoff ends, or something changes.
		var next time.Time
		p.mu.Lock()
		for _, pc := range w.ready {
			at := pc.born.Add(w.lifetime - replaceLead(w.lifetime))
			if !at.After(now) {
				at = pc.born.Add(w.lifetime)
			}
			if next.IsZero() || at.Before(next) {
				next = at
			}
		}
		p.mu.Unlock()
		if !isHeld && need > 0 && notBefore.After(now) && (next.IsZero() || notBefore.Before(next)) {
			next = notBefore
		}
		if !isHeld && refreshed == nil && !refreshAt.IsZero() && (next.IsZero() || refreshAt.Before(next)) {
			next = refreshAt
		}
		var timer <-chan time.Time
		var t *time.Timer
		if !next.IsZero() {
			t = time.NewTimer(max(next.Sub(now), time.Millisecond))
			timer = t.C
		}
		select {
		case <-ctx.Done():
		case <-w.wake:
		case <-changed:
		case <-timer:
		case <-refreshed:
			refreshed = nil
		}
		if t != nil {
			t.Stop()
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// replaceLead is how long before the end of its lifetime a warm
// connection's replacement is dialed, so that a login finds one ready
// throughout.
func replaceLead(lifetime time.Duration) time.Duration { return min(lifetime/10, 5*time.Second) }

// needLocked is how many connections w should dial now: its target, less
// those ready that are not about to be replaced, within the account's
// connection limit together with its open sessions. p.mu is held.
func (p *warmPool[C]) needLocked(w *warmAccount[C], now time.Time) int {
	fresh := 0
	for _, pc := range w.ready {
		if now.Sub(pc.born) < w.lifetime-replaceLead(w.lifetime) {
			fresh++
		}
	}
	need := w.target - fresh
	if max := p.max(w.acct.Config); max > 0 {
		need = min(need, max-int(p.open(w.acct))-len(w.ready))
	}
	return need
}

// discard closes a connection nobody will use.
func discard[C warmConn](c C) { c.Close() }

// aliveConn reports, without blocking, whether a greeted connection that
// waited is still usable: open, and with nothing unread (a server says
// nothing before a command, so any bytes are a BYE or an alert). raw is
// the TCP connection under any TLS; buffered is what the reader above it
// holds.
func aliveConn(raw net.Conn, buffered int) bool {
	if buffered > 0 {
		return false
	}
	if ok, known := peekAlive(raw); known {
		return ok
	}
	// No socket to peek at (net.Pipe in tests): a read with a deadline
	// already past reports EOF of a closed peer, else times out.
	raw.SetReadDeadline(time.Unix(1, 0))
	var b [1]byte
	_, err := raw.Read(b[:])
	raw.SetReadDeadline(time.Time{})
	return errors.Is(err, os.ErrDeadlineExceeded)
}
