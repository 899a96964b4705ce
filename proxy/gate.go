package proxy

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultLogins is how many upstream logins an IMAP or POP3 server runs at
// once to one upstream server when Limits.Logins is 0.
//
// An upstream login is a TCP and TLS handshake, a greeting and an
// AUTHENTICATE: a few milliseconds of CPU and tens of kilobytes of
// short-lived memory, and over a real network 100 to 200 ms of waiting.
// When every helpdesk reconnects at once (relayd restarted, a network
// came back), a thousand of them at a time would leave the heap's peak and
// its fragmentation behind for as long as those sessions stay open (issue
// 20: 13.5 KB per idle session after a burst, 11.0–11.5 with the gate),
// and would look to the provider like a flood from one address.
// Sixty-four at once still start about 400 logins a second at 30 ms from
// the provider, and on loopback the CPU is the limit anyway.
const DefaultLogins = 64

var (
	// errLoginsBusy ends a login that waited its whole upstream timeout
	// for a place among the logins in progress.
	errLoginsBusy = errors.New("as many upstream logins to this server as relayd runs at once were in progress for the whole upstream timeout")
	// errGatesClosed ends a login that was waiting or in progress when
	// the server shut down, and any login after.
	errGatesClosed = errors.New("relayd is shutting down")
)

// loginGates bound the upstream logins in progress, per upstream server
// (host:port), so that an upstream that stopped answering holds up only
// its own logins. A login takes a place before it dials (or takes a warm
// connection) and gives it back once the upstream answered its
// AUTHENTICATE; the rest wait their turn, in no particular order, for up
// to the upstream timeout. The login's own timeout starts once it has a
// place: time spent waiting is not taken from the upstream, which did
// nothing wrong.
type loginGates struct {
	n int
	// ctx ends when the server shuts down: waiting logins give up, and
	// logins in progress are cancelled.
	ctx  context.Context
	stop context.CancelFunc

	mu     sync.Mutex
	byHost map[string]*loginGate

	// lastWarn (nanoseconds since epoch, a monotonic reading) and gaveUp
	// keep the log to a line a minute while logins keep giving up.
	epoch    time.Time
	lastWarn atomic.Int64
	gaveUp   atomic.Int64
}

// A loginGate is one upstream server's places.
type loginGate struct {
	places chan struct{}
	// waiting counts the logins waiting for a place (tests).
	waiting atomic.Int32
}

func newLoginGates(n int) *loginGates {
	if n <= 0 {
		n = DefaultLogins
	}
	ctx, stop := context.WithCancel(context.Background())
	return &loginGates{n: n, ctx: ctx, stop: stop, epoch: time.Now(), byHost: map[string]*loginGate{}}
}

// gate returns host's gate (host:port, as configured; names are not case
// sensitive). Gates are never removed: there is one per upstream server
// the configuration ever named, a handful.
func (g *loginGates) gate(host string) *loginGate {
	host = strings.ToLower(host)
	g.mu.Lock()
	defer g.mu.Unlock()
	lg := g.byHost[host]
	if lg == nil {
		lg = &loginGate{places: make(chan struct{}, g.n)}
		g.byHost[host] = lg
	}
	return lg
}

// run calls login with a place at host's gate, waiting up to timeout for
// one, and with a context that ends timeout after the place was taken, or
// when the server shuts down (the login then fails with errGatesClosed).
// The place is given back when login returns (or panics).
func (g *loginGates) run(host string, timeout time.Duration, login func(ctx context.Context) error) error {
	lg := g.gate(host)
	if err := lg.enter(timeout, g.ctx.Done()); err != nil {
		if errors.Is(err, errLoginsBusy) {
			g.gaveUp.Add(1)
		}
		return err
	}
	defer lg.leave()
	ctx, cancel := context.WithTimeout(g.ctx, timeout)
	defer cancel()
	err := login(ctx)
	if err != nil && g.ctx.Err() != nil {
		return errGatesClosed
	}
	return err
}

// warnNow reports whether a login that gave up waiting is to be logged
// now, at most once a minute, and how many gave up since the last line.
func (g *loginGates) warnNow() (bool, int64) {
	now := int64(time.Since(g.epoch)) + int64(time.Minute) // the first give-up is logged
	last := g.lastWarn.Load()
	if now-last < int64(time.Minute) || !g.lastWarn.CompareAndSwap(last, now) {
		return false, 0
	}
	return true, g.gaveUp.Swap(0)
}

// close ends every login waiting or in progress with errGatesClosed, and
// every later one.
func (g *loginGates) close() { g.stop() }

// enter takes a place, waiting up to timeout (none: as long as it takes)
// or until done is closed; leave gives it back.
func (lg *loginGate) enter(timeout time.Duration, done <-chan struct{}) error {
	select {
	case <-done:
		return errGatesClosed
	default:
	}
	select {
	case lg.places <- struct{}{}:
		return nil
	default:
	}
	lg.waiting.Add(1)
	defer lg.waiting.Add(-1)
	var expired <-chan time.Time
	if timeout > 0 {
		t := time.NewTimer(timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case lg.places <- struct{}{}:
		return nil
	case <-expired:
		return errLoginsBusy
	case <-done:
		return errGatesClosed
	}
}

func (lg *loginGate) leave() { <-lg.places }
