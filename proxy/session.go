package proxy

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

// What the IMAP and POP3 proxies share: the accept loop, the local login
// check, the words of an upstream failure, a session's connections and
// its closing line, and the splice.

// acceptLoop accepts connections on ln, admitting each against count (one
// over a limit is sent refusal and closed, one outside allow_from closed
// without a word) and handing the others to
// start, which reports false when the server closed meanwhile: the
// connection is then closed and uncounted. Temporary accept errors are
// retried with backoff. It returns ErrServerClosed once closed reports
// true or ln is closed.
func acceptLoop(ln net.Listener, proto string, log *slog.Logger, count *sessionCount, refusal string,
	closed func() bool, start func(c net.Conn, addr netip.Addr) bool) error {
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			if closed() || errors.Is(err, net.ErrClosed) {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				log.Warn("accepting "+proto+" connection failed; retrying", "err", err, "delay", delay)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		addr := addrOf(c)
		switch count.admit(addr) {
		case "":
		case LimitAllowFrom:
			c.Close() // outside allow_from: not a word
			continue
		default:
			go refuse(c, refusal)
			continue
		}
		if !start(c, addr) {
			c.Close()
			count.release(addr)
			return ErrServerClosed
		}
	}
}

// localRefusal is why checkLocal refused a downstream login; each protocol
// says it in its own words.
type localRefusal int

const (
	localOK             localRefusal = iota
	localLockedOut                   // the guard locked the user out
	localBadCredentials              // unknown user or wrong password
	localReconfiguring               // a reload is adding or removing the account
	localOutgoingOnly                // the account's direction has no incoming mail
)

// localLogin is what checkLocal needs from a listener.
type localLogin struct {
	proto    string // "imap", "pop3": for the Recorder
	users    *localauth.Users
	accounts *registry.Registry
	rec      Recorder
	// delay is waited after a wrong password (AuthFailureDelay);
	// negative: not at all.
	delay time.Duration
}

// checkLocal checks a downstream client's credentials against the local
// logins (bcrypt, the cache of verified logins, the guard's lockouts),
// finds the running account and checks that it serves incoming mail. A
// refusal is logged and recorded; log gains the account's name once known.
// The account comes back with localOK, and with localOutgoingOnly to be
// named.
func (l localLogin) checkLocal(log *slog.Logger, user, pass, remote string) (*registry.Account, *slog.Logger, localRefusal) {
	what := map[string]string{"imap": "IMAP", "pop3": "POP3"}[l.proto]
	cfgAcct, err := l.users.CheckFrom(user, pass, remote)
	if errors.Is(err, localauth.ErrLockedOut) {
		log.Debug(what+" login refused: the user is locked out", "user", user)
		l.rec.Login(l.proto, "", "locked_out")
		return nil, log, localLockedOut
	}
	if err != nil {
		if l.delay > 0 {
			time.Sleep(l.delay)
		}
		log.Info(what+" login failed: unknown user or wrong password", "user", user)
		l.rec.Login(l.proto, "", "bad_credentials")
		return nil, log, localBadCredentials
	}
	log = log.With("account", cfgAcct.Name)
	acct := l.accounts.Get(cfgAcct.Name)
	if acct == nil {
		// A reload is swapping the accounts: the password was checked
		// against the new (or old) set, the account is in the other.
		log.Info(what + " login refused: the account is being added or removed by a reload")
		l.rec.Login(l.proto, cfgAcct.Name, "refused")
		return nil, log, localReconfiguring
	}
	if !cfgAcct.Direction.Incoming() {
		log.Warn(what + " login refused: the account is not configured for incoming mail")
		l.rec.Login(l.proto, cfgAcct.Name, "refused")
		return acct, log, localOutgoingOnly
	}
	return acct, log, localOK
}

// upstreamFailure logs a failed upstream login of account a and returns
// what the client may be told — words an admin can act on, without
// configuration details (the log and relayd status have those) — and
// whether trying again later may work.
func upstreamFailure(log *slog.Logger, proto string, a *registry.Account, err error) (text string, temporary bool) {
	var ue *unavailableError
	if he := health.AsError(err); he != nil {
		log.Warn(proto+" login failed: account needs attention", "state", he.State, "reason", he.Reason, "err", he.Detail(), "advice", he.Advice)
		text := he.Client
		if text == "" {
			text = fmt.Sprintf("mailbox %q is not available: see 'relayd status'", a.Config.Name)
		}
		return text, he.Temporary()
	}
	if errors.Is(err, errLoginsBusy) {
		return "too many logins in progress; try again later", true // logged by failedLogin
	}
	if errors.Is(err, errGatesClosed) {
		log.Info(proto + " login ended: relayd is shutting down")
		return "the server is shutting down; try again later", true
	}
	if errors.As(err, &ue) {
		log.Warn(proto+" login failed: upstream unavailable", "upstream", ue.host, "err", ue.err)
		return "the mail server is unreachable; try again later", true
	}
	log.Error(proto+" login failed", "err", err)
	return "internal error, try again", true
}

// failedLogin returns the outcome to record for an upstream login that
// failed with err. One that gave up waiting for a place at gates is
// "limited": it is counted as refused by LimitLogins and logged, at most
// once a minute with how many gave up since. One ended by a shutdown is
// "refused": the upstream did not fail.
func failedLogin(err error, gates *loginGates, rec Recorder, proto string, log *slog.Logger) string {
	if errors.Is(err, errGatesClosed) {
		return "refused"
	}
	if !errors.Is(err, errLoginsBusy) {
		return "upstream_failed"
	}
	rec.Refused(proto, LimitLogins)
	if ok, n := gates.warnNow(); ok {
		log.Warn(strings.ToUpper(proto)+" login gave up waiting for its turn: "+errLoginsBusy.Error()+
			"; the upstream server is slow to answer logins, or a crowd of clients logs in at once: see 'relayd status' for the account's upstream",
			"gave_up_since_last_line", n)
	}
	return "limited"
}

// conns are a session's downstream connection and, once logged in, its
// upstream one.
type conns struct {
	closeMu sync.Mutex
	// down is the client's connection: raw, or TLS over it once a
	// handshake is done. It changes, under the session's writeMu, only in
	// the session's goroutine; other goroutines close raw.
	down net.Conn
	raw  net.Conn
	up   net.Conn
	// closed, when set, is called after close closed the connections.
	closed func()
}

// newConns returns the conns of a client connected on c.
func newConns(c net.Conn) conns { return conns{down: c, raw: c} }

// close closes both at once; safe from any goroutine. A TLS client hears
// no close_notify (closeNotify says it first where that cannot block).
func (c *conns) close() {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	c.raw.Close()
	if c.up != nil {
		c.up.Close()
	}
	if c.closed != nil {
		c.closed()
	}
}

// onClose has f called whenever close closes the connections: a spliced
// session's parked directions must hear of it.
func (c *conns) onClose(f func()) {
	c.closeMu.Lock()
	c.closed = f
	c.closeMu.Unlock()
}

// closeNotify ends a TLS client's connection with a close_notify alert
// (RFC 8446 §6.1). Only the session's goroutine calls it, when nothing
// else writes to the client.
func (c *conns) closeNotify() {
	if tc, ok := c.down.(*tls.Conn); ok {
		tc.CloseWrite() // bounded by crypto/tls's own 5s deadline
	}
}

// setUp records the upstream connection, for close.
func (c *conns) setUp(up net.Conn) {
	c.closeMu.Lock()
	c.up = up
	c.closeMu.Unlock()
}

// ending is what a session's one closing line says.
type ending struct {
	start   time.Time
	outcome string // how it ended; "" = the client closed
	// outcomeAtomic is an outcome set from another goroutine.
	outcomeAtomic atomic.Value
	counted       bool
	ended         bool
	in, out       uint64 // bytes from and to the client
}

// finish counts how many bytes the client sent and received on raw, its
// TCP connection, from the kernel's TCP statistics (the copy loops need
// not count), tells rec and logs the session's one closing line, before
// the connection closes. It runs once.
func (e *ending) finish(proto string, rec Recorder, log *slog.Logger, raw net.Conn, account string) {
	if e.ended {
		return
	}
	e.ended = true
	if o, ok := e.outcomeAtomic.Load().(string); ok {
		e.outcome = o
	}
	e.in, e.out, e.counted = tcpBytes(raw)
	rec.SessionEnd(proto, account, e.in, e.out)
	outcome := e.outcome
	if outcome == "" {
		outcome = "closed"
	}
	attrs := []any{"outcome", outcome, "duration", time.Since(e.start).Round(time.Millisecond)}
	if e.counted {
		attrs = append(attrs, "bytes_in", e.in, "bytes_out", e.out)
	}
	log.Info(map[string]string{"imap": "IMAP", "pop3": "POP3"}[proto]+" session ended", attrs...)
}

// splice is a logged-in session's two ends, ready to be connected.
type splice struct {
	proto string // "IMAP", "POP3": for log lines
	// conns are the session's: run closes them.
	conns    *conns
	down, up net.Conn
	// downBuf and upBuf are the pre-auth readers: what they hold was
	// read but not yet passed on.
	downBuf, upBuf *bufio.Reader
	cs             *clientStream
	idle, wt       time.Duration
	log            *slog.Logger
	health         *health.Account
	// started, when set, is called once the buffered bytes are passed on
	// and the copies begin; it is let go of then.
	started func()
	// end is called with the outcome ("" = the client closed) once the
	// client-to-upstream copy stopped, before the connections close.
	end func(outcome string)
	// finally, when set, is called once the session is over, by whichever
	// goroutine ends it: run then returns as soon as the copies started.
	finally  func()
	finished sync.Once

	// upEnded: the upstream-to-client copy ended. downStalled: because
	// the client took nothing for wt.
	upEnded, downStalled atomic.Bool
	bulkDone             chan struct{} // closed when the upstream-to-client copy ended
	parked               struct {
		sync.Mutex
		client, bulk *parking // each direction's parking, while parked
		closing      bool     // the connections are closed: nothing parks
		// idleFrom is when the client direction's idle time began,
		// kept while it is parked.
		idleFrom time.Time
	}
}

// run flushes whatever either reader had buffered (a client may pipeline
// commands right after its login), then copies bytes both ways without
// parsing them: upstream to client with copyBulk, client to upstream with
// copyIdle, each on its own goroutine while bytes move and parked while
// its source is quiet (park.go). The session is over when either side
// closed, with both connections closed (a TLS client told close_notify
// once the upstream ended); if the flush fails, it is over at once,
// without end being called. Without finally, run returns when the session
// is over; with it, at once, and finally is called when it is.
func (p *splice) run() {
	if p.finally == nil {
		done := make(chan struct{})
		p.finally = func() { close(done) }
		p.start()
		<-done
		return
	}
	p.start()
}

// start begins the session and continues it in the client-to-upstream
// direction until that parks or the session is over.
func (p *splice) start() {
	// A panic before the copies begin (client recovers its own): the
	// session still ends, once. The goroutine that logged in runs this
	// and recovers nothing once the session is handed over, so without
	// this relayd would go down.
	defer p.endOnPanic("starting an " + p.proto + " session's copies")
	p.up.SetDeadline(time.Time{})
	p.down.SetDeadline(time.Time{})
	cs := p.cs
	if b := buffered(p.downBuf); len(b) > 0 {
		cs.fromClient(b)
		if _, err := p.up.Write(b); err != nil {
			p.finish()
			return
		}
	}
	if b := buffered(p.upBuf); len(b) > 0 {
		cs.lines.Write(b)
		if _, err := p.down.Write(b); err != nil {
			p.finish()
			return
		}
	}
	p.downBuf, p.upBuf = nil, nil // passed on: garbage now
	if p.started != nil {
		p.started()
		p.started = nil
	}
	p.bulkDone = make(chan struct{})
	p.parked.idleFrom = time.Now()
	p.conns.onClose(p.closing)
	go p.bulk()
	p.client()
}

// endOnPanic, deferred, recovers a panic (logged as happening while
// doing what) and ends the session: its connections closed, finally
// called once.
func (p *splice) endOnPanic(what string) {
	if v := recover(); v != nil {
		health.Recovered(p.log, p.health, what, v)
		p.conns.close()
		p.finish()
	}
}

// finish calls finally, once.
func (p *splice) finish() { p.finished.Do(p.finally) }

// errPanicked ends a direction that panicked (the panic is logged).
var errPanicked = errors.New("panicked")

// bulk copies upstream to client until the upstream ends or the copy
// parks. Its end wakes the client-to-upstream direction, which ends the
// session.
func (p *splice) bulk() {
	parked := false
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(p.log, p.health, "copying an "+p.proto+" session's bytes", v)
		} else if parked {
			return
		}
		// Wake the other direction without closing, so that the
		// session's end is counted and logged before the client sees
		// it.
		p.upEnded.Store(true)
		p.down.SetReadDeadline(time.Now())
		p.unpark(&p.parked.client, p.client)
		close(p.bulkDone)
	}()
	err := copyBulk(p.down, p.up, p.wt, p.cs, &dirWait{p: p, slot: &p.parked.bulk, resume: p.bulk})
	switch {
	case errors.Is(err, errParked):
		parked = true
	case errors.Is(err, errStalled):
		p.downStalled.Store(true)
	}
}

// client copies client to upstream until the copy parks or the session
// is over, and then ends it.
func (p *splice) client() {
	defer p.endOnPanic("ending an " + p.proto + " session") // it still ends, once
	var err error
	func() {
		defer func() {
			if v := recover(); v != nil {
				health.Recovered(p.log, p.health, "copying an "+p.proto+" session's bytes", v)
				err = errPanicked
			}
		}()
		err = copyIdle(p.up, p.down, p.idle, p.wt, &p.upEnded, p.cs,
			&dirWait{p: p, slot: &p.parked.client, resume: p.client})
	}()
	if errors.Is(err, errParked) {
		return
	}
	wt := p.wt
	var outcome string
	switch {
	case p.downStalled.Load():
		outcome = "client stopped reading"
		p.log.Warn(p.proto+" session closed: the client took nothing relayd wrote for "+wt.String(), "write_timeout", wt)
	case errors.Is(err, errStalled):
		outcome = "upstream stopped reading"
		p.log.Warn(p.proto+" session closed: the upstream server took nothing relayd wrote for "+wt.String(), "write_timeout", wt)
	case p.upEnded.Load():
		outcome = "upstream closed"
	case errors.Is(err, os.ErrDeadlineExceeded):
		outcome = "idle timeout"
	}
	p.end(outcome)
	if p.upEnded.Load() {
		<-p.bulkDone // nothing writes to the client any more
		p.conns.closeNotify()
	}
	p.conns.close() // wakes a parked upstream-to-client copy
	<-p.bulkDone
	p.finish()
}
