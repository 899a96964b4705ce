package proxy

import (
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits bound how many downstream sessions a server holds at once. Zero
// means no limit.
type Limits struct {
	// Sessions is the most open sessions of the protocol.
	Sessions int
	// PerAddress is the most open sessions from one client address. On
	// loopback every local client shares 127.0.0.1, so this matters for
	// listeners beyond the host.
	PerAddress int
	// AllowFrom, when not empty, are the only client networks admitted;
	// a connection from elsewhere is closed before the greeting.
	AllowFrom []netip.Prefix
	// Logins is the most upstream logins in progress at once; the rest
	// wait their turn. 0 means DefaultLogins. It is read when the server
	// is made: SetLimits does not change it.
	Logins int
}

// allowed reports whether AllowFrom admits addr.
func (l *Limits) allowed(addr netip.Addr) bool {
	if len(l.AllowFrom) == 0 {
		return true
	}
	for _, p := range l.AllowFrom {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Which limit refused a connection, as logged and counted.
const (
	LimitSessions   = "sessions"
	LimitPerAddress = "per_address"
	LimitPerAccount = "per_account"
	// LimitAllowFrom refuses a client outside allow_from: the connection
	// is closed without a word.
	LimitAllowFrom = "allow_from"
	// LimitLogins refuses a login that waited the whole upstream
	// timeout for a place among the upstream logins in progress
	// (gate.go); the session stays open.
	LimitLogins = "logins"
)

// limitKey is the configuration key behind each server-wide limit.
var limitKey = map[string]string{LimitSessions: "max_sessions", LimitPerAddress: "max_sessions_per_address"}

// sessionCount counts a server's open connections, in total and by client
// address, against limits that a reload may change. Safe for use from any
// goroutine.
type sessionCount struct {
	protocol string
	log      *slog.Logger
	limits   atomic.Pointer[Limits]
	// rec is told of each refused connection.
	rec Recorder
	// afterRelease, when set (by tests, before serving), is called after
	// each release.
	afterRelease func()

	mu      sync.Mutex
	total   int
	byAddr  map[netip.Addr]int
	refused int       // since the last log line
	logged  time.Time // when refusals were last logged
	// The same for refusals by allow_from.
	strangers       int
	strangersLogged time.Time
}

func newSessionCount(protocol string, log *slog.Logger, l Limits, rec Recorder) *sessionCount {
	if rec == nil {
		rec = nopRecorder{}
	}
	c := &sessionCount{protocol: protocol, log: log, byAddr: map[netip.Addr]int{}, rec: rec}
	c.limits.Store(&l)
	return c
}

// admit counts a new connection from addr, or returns the limit that
// refuses it.
func (c *sessionCount) admit(addr netip.Addr) (refusedBy string) {
	l := c.limits.Load()
	if !l.allowed(addr) {
		c.refuseStranger(addr)
		return LimitAllowFrom
	}
	c.mu.Lock()
	switch {
	case l.Sessions > 0 && c.total >= l.Sessions:
		refusedBy = LimitSessions
	case l.PerAddress > 0 && c.byAddr[addr] >= l.PerAddress:
		refusedBy = LimitPerAddress
	default:
		c.total++
		c.byAddr[addr]++
		c.mu.Unlock()
		return ""
	}
	// One line per minute at most: a flood must not flood the journal.
	c.refused++
	logNow := time.Since(c.logged) >= time.Minute
	n := c.refused
	if logNow {
		c.logged, c.refused = time.Now(), 0
	}
	c.mu.Unlock()
	if logNow {
		table := strings.ToLower(c.protocol)
		c.log.Warn(c.protocol+" connection refused: too many open sessions; if these clients are expected raise ["+table+"] "+limitKey[refusedBy]+", else find the client that opens so many",
			"limit", refusedBy, "max_sessions", l.Sessions, "max_sessions_per_address", l.PerAddress,
			"remote", addr.String(), "refused_since_last_report", n)
	}
	c.rec.Refused(strings.ToLower(c.protocol), refusedBy)
	return refusedBy
}

// refuseStranger logs (once a minute at most) and counts a connection
// allow_from refused.
func (c *sessionCount) refuseStranger(addr netip.Addr) {
	c.mu.Lock()
	c.strangers++
	n := c.strangers
	logNow := time.Since(c.strangersLogged) >= time.Minute
	if logNow {
		c.strangersLogged, c.strangers = time.Now(), 0
	}
	c.mu.Unlock()
	table := strings.ToLower(c.protocol)
	if logNow {
		c.log.Warn(c.protocol+" connection refused: the client is outside ["+table+"] allow_from; add its network there if it should connect",
			"limit", LimitAllowFrom, "remote", addr.String(), "refused_since_last_report", n)
	}
	c.rec.Refused(table, LimitAllowFrom)
}

// release uncounts a connection admitted from addr.
func (c *sessionCount) release(addr netip.Addr) {
	c.mu.Lock()
	c.total--
	if c.byAddr[addr]--; c.byAddr[addr] <= 0 {
		delete(c.byAddr, addr)
	}
	c.mu.Unlock()
	if c.afterRelease != nil {
		c.afterRelease()
	}
}

// addrOf is a connection's client address (its zone and port dropped, an
// IPv4-mapped address unmapped), or the zero Addr for a non-IP connection.
func addrOf(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return ta.AddrPort().Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}

// limitListener admits each accepted connection against a sessionCount.
// A refused connection is sent refusal (a protocol greeting that says
// no), closed, and never returned; an admitted one is uncounted when it
// closes.
type limitListener struct {
	net.Listener
	count   *sessionCount
	refusal string
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := addrOf(c)
		switch l.count.admit(addr) {
		case "":
		case LimitAllowFrom:
			c.Close()
			continue
		default:
			go refuse(c, l.refusal)
			continue
		}
		return &countedConn{Conn: c, count: l.count, addr: addr}, nil
	}
}

// refuse writes the refusal, with a short deadline so that a client that
// does not read cannot hold the goroutine, and closes.
func refuse(c net.Conn, refusal string) {
	c.SetWriteDeadline(time.Now().Add(time.Second))
	c.Write([]byte(refusal))
	c.Close()
}

// countedConn uncounts itself once, at its first Close.
type countedConn struct {
	net.Conn
	count *sessionCount
	addr  netip.Addr
	once  sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.count.release(c.addr) })
	return c.Conn.Close()
}
