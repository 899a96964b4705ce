package status

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Limits bound the connections of relayd's own HTTP listeners, the status
// socket and [metrics] listen, so that clients that connect and stay idle
// (or read slowly) cannot take the file descriptors the IMAP and SMTP
// listeners need. Zero fields take their defaults.
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// IdleTimeout closes a keep-alive connection that sends no further
	// request for this long after an answer. Default 60s.
	IdleTimeout time.Duration
	// RequestTimeout bounds reading a request's body and writing its
	// answer. Default 30s.
	RequestTimeout time.Duration
	// SlowRequestTimeout replaces RequestTimeout for the calls that
	// legitimately take long: handing over a grant (relayd refreshes a
	// token with it before answering) and reading a queued message's
	// content. Default 10m.
	SlowRequestTimeout time.Duration
	// MaxConns is how many connections one listener keeps open; any
	// further one is closed as soon as it is accepted. Default 1/16 of
	// the open-file limit (RLIMIT_NOFILE), at least 8 and at most 256:
	// the status socket and the metrics listener together never hold
	// more than 1/8 of relayd's descriptors, and the rest stays for mail.
	MaxConns int
	// MaxConnsPerUID is how many of the status socket's connections one
	// local user (by SO_PEERCRED) keeps open, so that one user cannot
	// lock the others out. Default MaxConns/4, at least 2.
	MaxConnsPerUID int
}

// withDefaults fills in l's zero fields.
func (l Limits) withDefaults() Limits {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&l.ReadHeaderTimeout, 10*time.Second)
	def(&l.IdleTimeout, 60*time.Second)
	def(&l.RequestTimeout, 30*time.Second)
	def(&l.SlowRequestTimeout, 10*time.Minute)
	if l.MaxConns <= 0 {
		l.MaxConns = defaultMaxConns(openFileLimit())
	}
	if l.MaxConnsPerUID <= 0 {
		l.MaxConnsPerUID = max(2, l.MaxConns/4)
	}
	return l
}

// defaultMaxConns is MaxConns's default for an open-file limit of nofile.
func defaultMaxConns(nofile uint64) int {
	return int(min(256, max(8, nofile/16)))
}

// openFileLimit is the process's soft RLIMIT_NOFILE (which Go raises to
// the hard limit at start).
func openFileLimit() uint64 {
	var r unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &r); err != nil {
		return 1024
	}
	return r.Cur
}

// newHTTPServer returns an HTTP server for h bounded by l (with its
// defaults filled in). There is no server-wide WriteTimeout: each request
// gets l.RequestTimeout, and the slow calls extend theirs (slowCall).
func newHTTPServer(h http.Handler, l Limits, connContext func(context.Context, net.Conn) context.Context) *http.Server {
	return &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			setDeadline(w, l.RequestTimeout)
			h.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: l.ReadHeaderTimeout,
		IdleTimeout:       l.IdleTimeout,
		ConnContext:       connContext,
	}
}

// setDeadline gives the request answered through w d from now to be read
// and answered.
func setDeadline(w http.ResponseWriter, d time.Duration) {
	rc := http.NewResponseController(w)
	t := time.Now().Add(d)
	rc.SetReadDeadline(t)
	rc.SetWriteDeadline(t)
}

// slowCall gives a call that legitimately takes long (see
// Limits.SlowRequestTimeout) its longer deadline.
func (s *Server) slowCall(w http.ResponseWriter) { setDeadline(w, s.lim.SlowRequestTimeout) }

// limitListener closes, as soon as they are accepted, the connections
// beyond its caps: max in all and, when perUID > 0, perUID from one local
// user. It takes each Unix connection's peer credentials at accept and
// binds them to the connection.
type limitListener struct {
	net.Listener
	name        string // for the log: "status socket" or "metrics listener"
	max, perUID int
	log         *slog.Logger

	mu      sync.Mutex
	open    int
	byUID   map[int]int
	logged  time.Time // the last refusal logged
	refused int       // refusals since then
}

func newLimitListener(ln net.Listener, name string, max, perUID int, log *slog.Logger) *limitListener {
	return &limitListener{Listener: ln, name: name, max: max, perUID: perUID, log: log, byUID: map[int]int{}}
}

// Accept returns the next connection within the caps, closing the others.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		var p *Peer
		if uc, ok := c.(*net.UnixConn); ok {
			p = peerOf(uc)
		}
		if l.take(p) {
			return &limitedConn{Conn: c, l: l, peer: p}, nil
		}
		c.Close()
	}
}

// take counts a new connection from p (nil: not a Unix one, or its
// credentials are unknown) and reports whether it is within the caps; a
// refusal is logged, once a minute at most.
func (l *limitListener) take(p *Peer) bool {
	uid := uidOf(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open < l.max && (l.perUID <= 0 || l.byUID[uid] < l.perUID) {
		l.open++
		if l.perUID > 0 {
			l.byUID[uid]++
		}
		return true
	}
	l.refused++
	if now := time.Now(); now.Sub(l.logged) >= time.Minute {
		args := []any{"open", l.open, "max", l.max, "refused", l.refused}
		if l.perUID > 0 {
			args = append(args, "uid", uid, "open_by_uid", l.byUID[uid], "max_per_uid", l.perUID)
		}
		which := "max: the limit of the listener"
		if l.open < l.max {
			which = "max_per_uid: one local user's share, a quarter of max"
		}
		l.log.Warn(l.name+": closed new connections at once: too many are open (clients keeping idle connections?). "+
			"The cap hit is "+which+"; max is 1/16 of relayd's open-file limit, 8 to 256 (LimitNOFILE= in the systemd unit): raise that if legitimate clients are refused", args...)
		l.logged, l.refused = now, 0
	}
	return false
}

// release uncounts a connection from p.
func (l *limitListener) release(p *Peer) {
	uid := uidOf(p)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.open--
	if l.perUID > 0 {
		if l.byUID[uid]--; l.byUID[uid] <= 0 {
			delete(l.byUID, uid)
		}
	}
}

func uidOf(p *Peer) int {
	if p == nil {
		return -1
	}
	return p.UID
}

// limitedConn is a connection counted by its limitListener until closed,
// with the peer credentials taken when it was accepted.
type limitedConn struct {
	net.Conn
	l    *limitListener
	peer *Peer
	once sync.Once
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c.peer) })
	return err
}

// MetricsServer serves GET /metrics on [metrics] listen, bounded by the
// same Limits as the status socket (less the per-user cap: a TCP peer has
// no uid).
type MetricsServer struct {
	lim Limits
	log *slog.Logger
	srv *http.Server
}

// NewMetricsServer returns a server for m; l's zero fields take their
// defaults.
func NewMetricsServer(m *Metrics, l Limits, log *slog.Logger) *MetricsServer {
	l = l.withDefaults()
	return &MetricsServer{lim: l, log: log, srv: newHTTPServer(m.Handler(), l, nil)}
}

// Serve serves on ln until Shutdown; it returns nil then.
func (s *MetricsServer) Serve(ln net.Listener) error {
	err := s.srv.Serve(newLimitListener(ln, "metrics listener", s.lim.MaxConns, 0, s.log))
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}

// Shutdown stops the server, waiting for scrapes in progress until ctx
// ends.
func (s *MetricsServer) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
