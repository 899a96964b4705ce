package proxy

import (
	"context"
	"errors"
	"sync/atomic"
)

// DefaultLogins is how many upstream logins an IMAP or POP3 server runs at
// once when Limits.Logins is 0.
//
// An upstream login is a TCP and TLS handshake, a greeting and an
// AUTHENTICATE: a few milliseconds of CPU and tens of kilobytes of
// short-lived memory, and over a real network 100 to 200 ms of waiting.
// When every helpdesk reconnects at once (relayd restarted, a network
// came back), a thousand of them at a time would leave the heap's peak and
// its fragmentation behind for as long as those sessions stay open (issue
// 20: 13.5 KB per idle session after a burst, 11.8 with the gate), and
// would look to the provider like a flood from one address. Sixty-four at
// once still starts about 400 logins a second at 30 ms from the provider,
// and on loopback the CPU is the limit anyway.
const DefaultLogins = 64

// errLoginsBusy ends a login that waited its whole upstream timeout for a
// place among the logins in progress.
var errLoginsBusy = errors.New("as many upstream logins as relayd runs at once were in progress for the whole upstream timeout")

// A loginGate bounds the upstream logins in progress: each takes a place
// before it dials (or takes a warm connection) and gives it back once the
// upstream answered its AUTHENTICATE. The rest wait their turn, in no
// particular order, up to their login's deadline.
type loginGate struct {
	places chan struct{}
	// waiting counts the logins waiting for a place (tests).
	waiting atomic.Int32
}

func newLoginGate(n int) *loginGate {
	if n <= 0 {
		n = DefaultLogins
	}
	return &loginGate{places: make(chan struct{}, n)}
}

// enter takes a place, waiting until ctx ends for one; leave gives it back.
func (g *loginGate) enter(ctx context.Context) error {
	select {
	case g.places <- struct{}{}:
		return nil
	default:
	}
	g.waiting.Add(1)
	defer g.waiting.Add(-1)
	select {
	case g.places <- struct{}{}:
		return nil
	case <-ctx.Done():
		return errLoginsBusy
	}
}

func (g *loginGate) leave() { <-g.places }
