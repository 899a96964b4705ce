package web

import (
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"
)

// limitListener closes, as soon as they are accepted, the connections
// beyond its caps: max in all and perAddr from one client address, so
// that idle or slow clients cannot take the descriptors mail needs.
// Loopback clients have no per-address cap: every user of an ssh -L
// tunnel comes from 127.0.0.1, and one of them must not shut the others
// out.
type limitListener struct {
	net.Listener
	max, perAddr int
	log          *slog.Logger

	mu      sync.Mutex
	open    int
	byAddr  map[netip.Addr]int
	logged  time.Time
	refused int
}

func newLimitListener(ln net.Listener, max, perAddr int, log *slog.Logger) *limitListener {
	return &limitListener{Listener: ln, max: max, perAddr: perAddr, log: log, byAddr: map[netip.Addr]int{}}
}

// Accept returns the next connection within the caps, closing the others.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		addr := addrOf(c.RemoteAddr())
		if l.take(addr) {
			return &limitedConn{Conn: c, l: l, addr: addr}, nil
		}
		c.Close()
	}
}

func addrOf(a net.Addr) netip.Addr {
	if ta, ok := a.(*net.TCPAddr); ok {
		ip, _ := netip.AddrFromSlice(ta.IP)
		return ip.Unmap()
	}
	return netip.Addr{}
}

func (l *limitListener) take(addr netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open < l.max && (addr.IsLoopback() || l.byAddr[addr] < l.perAddr) {
		l.open++
		l.byAddr[addr]++
		return true
	}
	l.refused++
	if now := time.Now(); now.Sub(l.logged) >= time.Minute {
		l.log.Warn("web console: closed new connections at once: too many are open", "open", l.open, "max", l.max,
			"address", addr.String(), "open_by_address", l.byAddr[addr], "max_per_address", l.perAddr, "refused", l.refused)
		l.logged, l.refused = now, 0
	}
	return false
}

func (l *limitListener) release(addr netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.byAddr[addr]--; l.byAddr[addr] <= 0 {
		delete(l.byAddr, addr)
	}
}

// limitedConn is counted by its listener until closed.
type limitedConn struct {
	net.Conn
	l    *limitListener
	addr netip.Addr
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.addr) })
	return err
}
