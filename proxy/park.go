package proxy

import (
	"errors"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Parking. A spliced session copies each direction on a goroutine of its
// own, which waits for its source socket to become readable. Waiting in a
// goroutine costs its stack (2 KiB at the least) and its g (half a KiB),
// and a session has two: more than everything else an idle session holds.
// So a direction whose source stayed quiet for parkAfter parks: its
// goroutine ends, and one goroutine for the whole process (the parker:
// an epoll set on Linux) waits for the socket instead. When the socket
// becomes readable, or the direction's deadline passes, or the session is
// woken (it is closing, the other direction ended), the direction goes on
// in a new goroutine, where its loop left off.
//
// Only a direction whose source holds no bytes in user space may park:
// a TCP socket, or a TLS connection whose last read ran into a deadline
// (crypto/tls then holds at most part of a record, whose rest is still
// to come on the socket).

// parkAfter is how long a direction's source must stay quiet before the
// direction parks; 0 never parks. A park and a wake-up cost two epoll_ctl
// calls and a goroutine, a few microseconds, nothing beside a round trip
// to a provider; a TLS source also gives back crypto/tls's read buffers
// when it parks (tlsidle.go), which its next record takes again (a few KB
// of garbage). A goroutine that waits longer than it must costs its g for
// good (Go reuses g's but never frees them), so the most goroutines relayd
// had at once, during a burst of logins, stays in its memory. One second
// is past the pause between a client's pipelined commands and between a
// server's chunks of a reply. Tests set it lower, so that their sessions
// park between commands.
var parkAfter = 1 * time.Second

// errParked is returned by a copy loop that parked: its goroutine ends
// without ending the session.
var errParked = errors.New("parked")

// A parking is one parked direction's place in the parker.
type parking struct {
	id    uint64
	rc    syscall.RawConn
	taken atomic.Bool // fired or cancelled: wake runs, or not, once
	timer *time.Timer // the direction's deadline; nil: none
	wake  func()
}

// A parkingSet is the parked directions, by id.
type parkingSet struct {
	sync.Mutex
	next   uint64
	byID   map[uint64]*parking
	failed bool // the parker stopped: nothing may park
}

// parkings are the process's parked directions.
var parkings = &parkingSet{byID: map[uint64]*parking{}}

// park hands the waiting for rc to the parker: wake runs, in a goroutine
// of its own, once rc's socket becomes readable or deadline (if not zero)
// passes, unless the parking is cancelled first. It fails when the
// direction cannot park (no parker here, or rc's socket closed).
func park(rc syscall.RawConn, deadline time.Time, wake func()) (*parking, error) {
	parkings.Lock()
	if parkings.failed {
		parkings.Unlock()
		return nil, errors.New("the parker stopped")
	}
	parkings.next++
	pk := &parking{id: parkings.next, rc: rc, wake: wake}
	parkings.byID[pk.id] = pk
	parkings.Unlock()
	if err := register(rc, pk.id); err != nil {
		parkings.Lock()
		delete(parkings.byID, pk.id)
		parkings.Unlock()
		return nil, err
	}
	if !deadline.IsZero() {
		// After the socket's registration: a fire that stops the
		// timer must find it. Timer is read under taken, below.
		t := time.AfterFunc(time.Until(deadline), pk.fire)
		parkings.Lock()
		pk.timer = t
		parkings.Unlock()
		if pk.taken.Load() {
			t.Stop() // fired before it had a timer
		}
	}
	return pk, nil
}

// get returns the parking with id, nil when it was taken meanwhile.
func (p *parkingSet) get(id uint64) *parking {
	p.Lock()
	defer p.Unlock()
	return p.byID[id]
}

// failAll wakes every parked direction and lets none park again.
func (p *parkingSet) failAll() {
	p.Lock()
	p.failed = true
	l := make([]*parking, 0, len(p.byID))
	for _, pk := range p.byID {
		l = append(l, pk)
	}
	p.Unlock()
	for _, pk := range l {
		pk.fire()
	}
}

// take marks the parking fired or cancelled and lets go of its place; it
// reports whether this call did (only one does).
func (pk *parking) take() bool {
	if !pk.taken.CompareAndSwap(false, true) {
		return false
	}
	parkings.Lock()
	delete(parkings.byID, pk.id)
	t := pk.timer
	parkings.Unlock()
	if t != nil {
		t.Stop()
	}
	unregister(pk.rc)
	return true
}

// fire wakes the parked direction: its socket is readable, or its
// deadline passed.
func (pk *parking) fire() {
	if pk.take() {
		go pk.wake()
	}
}

// cancel takes the parking back before it fires; it reports whether it
// did, in which case wake never runs and the caller goes on for the
// direction. False: wake runs (or ran).
func (pk *parking) cancel() bool { return pk.take() }

// A dirWait is where one direction of a splice waits for its source: in
// its goroutine, or, once the source stayed quiet for parkAfter, parked.
// A nil *dirWait always waits in the goroutine.
type dirWait struct {
	p    *splice
	slot **parking // the splice's place for this direction's parking
	// resume goes on with the direction after it was parked, in the
	// parker's new goroutine.
	resume func()
}

// parks reports whether the direction may park.
func (w *dirWait) parks() bool { return w != nil && canPark && parkAfter > 0 }

// wait waits until rc, conn's socket, is readable, honouring no deadline
// of its own. Once the socket stayed quiet for parkAfter, the direction
// parks and wait returns errParked.
func (w *dirWait) wait(conn net.Conn, rc syscall.RawConn) error {
	if !w.parks() {
		return waitReadable(rc)
	}
	for {
		conn.SetReadDeadline(time.Now().Add(parkAfter))
		err := waitReadable(rc)
		conn.SetReadDeadline(time.Time{})
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			return err
		}
		releaseTLSBuffers(conn)
		if w.park(rc, time.Time{}, nil) {
			return errParked
		}
	}
}

// park parks the direction on rc until it is readable or deadline (if
// not zero) passes; it reports whether it did. It does not when the
// session is closing or keep, called under the splice's lock, says no.
func (w *dirWait) park(rc syscall.RawConn, deadline time.Time, keep func() bool) bool {
	p := w.p
	p.parked.Lock()
	defer p.parked.Unlock()
	if p.parked.closing || keep != nil && !keep() {
		return false
	}
	var pk *parking
	pk, err := park(rc, deadline, func() {
		// Runs after park returned: the lock is held until then.
		p.parked.Lock()
		if *w.slot == pk {
			*w.slot = nil
		}
		p.parked.Unlock()
		w.resume()
	})
	if err != nil {
		return false
	}
	*w.slot = pk
	return true
}

// unpark wakes the direction parked in slot, if any: it goes on in a new
// goroutine.
func (p *splice) unpark(slot **parking, resume func()) {
	p.parked.Lock()
	pk := *slot
	ok := pk != nil && pk.cancel()
	if ok {
		*slot = nil
	}
	p.parked.Unlock()
	if ok {
		go resume()
	}
}

// closing is called once the session's connections are closed: parked
// directions go on, to find them closed, and none parks any more.
func (p *splice) closing() {
	p.parked.Lock()
	p.parked.closing = true
	p.parked.Unlock()
	p.unpark(&p.parked.client, p.client)
	p.unpark(&p.parked.bulk, p.bulk)
}

// parkedNow returns how many directions are parked, for status and tests.
func parkedNow() int {
	parkings.Lock()
	defer parkings.Unlock()
	return len(parkings.byID)
}
