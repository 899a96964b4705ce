package proxy

import (
	"math"
	"net"
	"sync/atomic"
	"time"
)

// A clientStream is what relayd knows of the bytes a spliced IMAP session
// has written to its client, and the lock that keeps its own lines (the
// BYE at the end of a shutdown) from landing among the upstream's.
//
// The upstream-to-client copy holds the lock while it writes and follows
// the bytes it writes in lines; the client-to-upstream copy watches for
// COMPRESS (RFC 4978), after which the bytes are deflated and no line of
// relayd's can be added. Its methods are safe from any goroutine unless
// they say otherwise.
type clientStream struct {
	sem   chan struct{} // holds a token while bytes are written to the client
	lines lineTracker   // guarded by sem; changed only by the upstream-to-client copy
	// compressed: the client may have asked for COMPRESS.
	compressed atomic.Bool
	watch      wordWatch // owned by the client-to-upstream copy
	// down is when bytes last went from the upstream to the client
	// (Unix nanoseconds): a client that reads a long FETCH or RETR is
	// not idle, though it sends nothing.
	down atomic.Int64
}

// noteDown records that bytes went to the client now.
func (s *clientStream) noteDown() { s.down.Store(time.Now().UnixNano()) }

// downWithin reports whether bytes went to the client within d.
func (s *clientStream) downWithin(d time.Duration) bool {
	at := s.down.Load()
	return at != 0 && time.Since(time.Unix(0, at)) < d
}

// newClientStream returns the stream of a session spliced right after
// relayd's tagged OK of the login: at a line boundary.
func newClientStream() *clientStream {
	return &clientStream{sem: make(chan struct{}, 1), watch: wordWatch{word: "compress deflate"}}
}

// newOpaqueStream returns the stream of a spliced session whose bytes
// relayd never follows, because it adds no line of its own once the
// client logged in (POP3): every octet may pass unseen, through splice(2)
// between two TCP sockets, and the stream is never at a boundary.
func newOpaqueStream() *clientStream {
	s := &clientStream{sem: make(chan struct{}, 1), lines: lineTracker{lost: true}}
	s.compressed.Store(true)
	return s
}

// lock takes the lock, waiting as long as it takes.
func (s *clientStream) lock() { s.sem <- struct{}{} }

// unlock gives the lock back.
func (s *clientStream) unlock() { <-s.sem }

// lockBy takes the lock, waiting for a write in progress until deadline;
// it reports whether it got it. Waiters get the lock in turn (a channel
// hands its slot to the longest waiting sender), so the copy cannot take
// it back before a waiting BYE.
func (s *clientStream) lockBy(deadline time.Time) bool {
	select {
	case s.sem <- struct{}{}:
		return true
	default:
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case s.sem <- struct{}{}:
		return true
	case <-t.C:
		return false
	}
}

// atBoundary reports whether the client could take a line from relayd
// now: what the upstream sent it so far ends a line outside a literal,
// and the client has not asked for COMPRESS. Call it with the lock held.
func (s *clientStream) atBoundary() bool {
	return s.lines.atBoundary() && !s.compressed.Load()
}

// unseenLimit is how many octets the upstream-to-client copy may pass
// without looking at them (splice(2)): the rest of a literal, any number
// once the tracker is lost or the client asked for COMPRESS, or none. Only
// the upstream-to-client copy may call it.
func (s *clientStream) unseenLimit() uint64 {
	if s.lines.lost || s.compressed.Load() {
		return math.MaxInt64
	}
	return s.lines.literal
}

// write writes b, bytes from the upstream, to the client under the lock,
// failing with errStalled when the client takes nothing for wt. Only the
// upstream-to-client copy may call it.
func (s *clientStream) write(dst net.Conn, b []byte, wt time.Duration) error {
	s.lock()
	defer s.unlock()
	s.lines.Write(b)
	s.noteDown()
	return writeWithin(dst, b, wt)
}

// fromClient watches b, bytes from the client, for COMPRESS. Only the
// client-to-upstream copy may call it, before it passes b on.
func (s *clientStream) fromClient(b []byte) {
	if !s.compressed.Load() && s.watch.seen(b) {
		s.compressed.Store(true)
	}
}
