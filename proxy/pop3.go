package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

// POP3Options configure a POP3Server. Zero values take the defaults named.
type POP3Options struct {
	// Users checks downstream credentials. Required.
	Users *localauth.Users
	// Accounts are the running accounts. Required.
	Accounts *registry.Registry
	Logger   *slog.Logger
	// Dialer dials upstream servers. Default: a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// TLS returns the downstream TLS configuration, or nil while there is
	// no certificate; it is asked at each connection and each STLS, so
	// that a certificate a reload replaced serves the next client. With
	// one, plain listeners offer STLS (RFC 2595) and ServeTLS serves
	// implicit TLS. Default: none, and CAPA offers no STLS.
	TLS func() *tls.Config
	// PreauthTimeout bounds the time to log in. Default 60s.
	PreauthTimeout time.Duration
	// IdleTimeout ends a session whose client sent nothing for this long.
	// Default 10 minutes, RFC 1939 §3's shortest autologout timer.
	IdleTimeout time.Duration
	// UpstreamTimeout bounds dialing and logging in upstream. Default 30s.
	UpstreamTimeout time.Duration
	// AuthFailureDelay is waited before answering a failed local login.
	// Default 2s; negative disables.
	AuthFailureDelay time.Duration
	// WriteTimeout ends a session whose client (or upstream) takes
	// nothing written to it for this long. Default 5 minutes.
	WriteTimeout time.Duration
	// Limits bound the open sessions; SetLimits changes them.
	Limits Limits
	// Warm tunes the warm upstream connections (pool.go); how many
	// each account keeps is its warm_connections.
	Warm WarmOptions
	// Recorder is told of logins, refusals by a limit and sessions' ends
	// (protocol "pop3"). Default: nothing is recorded.
	Recorder Recorder
}

// POP3Server is the downstream POP3 listener (RFC 1939, RFC 2449, RFC
// 5034): relayd answers the AUTHORIZATION state itself, logs in upstream
// and then copies bytes. Its methods are safe for use from any goroutine.
type POP3Server struct {
	opts POP3Options
	log  *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*pop3Session]struct{}
	closed    bool
	wg        sync.WaitGroup
	nextID    atomic.Uint64

	usersNow atomic.Pointer[localauth.Users] // set by SetUsers
	count    *sessionCount
	logins   *loginGates
	warm     *warmPool[*pop3Conn]
}

// NewPOP3Server returns a server; call Serve to accept connections.
func NewPOP3Server(opts POP3Options) *POP3Server {
	if opts.Recorder == nil {
		opts.Recorder = nopRecorder{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Dialer == nil {
		var d net.Dialer
		opts.Dialer = d.DialContext
	}
	if opts.PreauthTimeout == 0 {
		opts.PreauthTimeout = 60 * time.Second
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = config.MinPOP3IdleTimeout
	}
	if opts.UpstreamTimeout == 0 {
		opts.UpstreamTimeout = 30 * time.Second
	}
	if opts.AuthFailureDelay == 0 {
		opts.AuthFailureDelay = 2 * time.Second
	}
	if opts.WriteTimeout == 0 {
		opts.WriteTimeout = 5 * time.Minute
	}
	s := &POP3Server{
		opts: opts, log: opts.Logger,
		count:     newSessionCount("POP3", opts.Logger, opts.Limits, opts.Recorder),
		logins:    newLoginGates(opts.Limits.Logins),
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*pop3Session]struct{}{},
	}
	s.warm = s.newWarmPool()
	return s
}

// tlsConfig is the downstream TLS configuration now, or nil.
func (s *POP3Server) tlsConfig() *tls.Config {
	if s.opts.TLS == nil {
		return nil
	}
	return s.opts.TLS()
}

// Serve accepts plaintext connections on ln until Close or Shutdown, and
// then returns ErrServerClosed. They may start TLS with STLS while the
// server has a certificate (Options.TLS); unless ln is on loopback, they
// must before they log in (RFC 2595 §4: CAPA offers no USER and no SASL
// until then).
func (s *POP3Server) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS is Serve for implicit TLS (RFC 8314 §3.3, port 995): each
// connection starts with a TLS handshake.
func (s *POP3Server) ServeTLS(ln net.Listener) error { return s.serve(ln, true) }

func (s *POP3Server) serve(ln net.Listener, implicitTLS bool) error {
	plainAuth := plaintextAuthAllowed(ln.Addr())
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	closed := func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closed
	}
	return acceptLoop(ln, "POP3", s.log, s.count, "-ERR [SYS/TEMP] too many connections; try again later\r\n", closed,
		func(c net.Conn, addr netip.Addr) bool {
			sess := &pop3Session{srv: s, conns: newConns(c), id: s.nextID.Add(1), addr: addr,
				implicitTLS: implicitTLS, plainAuth: plainAuth}
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closed {
				return false
			}
			s.sessions[sess] = struct{}{}
			s.wg.Add(1)
			go sess.serve()
			return true
		})
}

// SetLimits changes the session limits (a reload); open sessions are not
// ended.
func (s *POP3Server) SetLimits(l Limits) { s.count.limits.Store(&l) }

// SetUsers replaces the local credentials new logins are checked against
// (a reload); open sessions are not affected.
func (s *POP3Server) SetUsers(u *localauth.Users) { s.usersNow.Store(u) }

func (s *POP3Server) users() *localauth.Users {
	if u := s.usersNow.Load(); u != nil {
		return u
	}
	return s.opts.Users
}

// local is how logins are checked against the local credentials.
func (s *POP3Server) local() localLogin {
	return localLogin{proto: "pop3", users: s.users(), accounts: s.opts.Accounts, rec: s.opts.Recorder, delay: s.opts.AuthFailureDelay}
}

// EndAccount closes the open sessions of account name (it was removed
// from the configuration) and returns how many there were. POP3 has no
// line a server may send unasked (RFC 1939), so the client sees the
// connection close.
func (s *POP3Server) EndAccount(name string) int {
	s.mu.Lock()
	var l []*pop3Session
	for sess := range s.sessions {
		if sess.accountName() == name {
			l = append(l, sess)
		}
	}
	s.mu.Unlock()
	for _, sess := range l {
		sess.outcomeAtomic.Store("account removed")
		sess.close()
	}
	return len(l)
}

// OpenSessions is how many POP3 connections are open.
func (s *POP3Server) OpenSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close closes the listeners and every session at once.
func (s *POP3Server) Close() error {
	s.warm.close()
	s.logins.close()
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for sess := range s.sessions {
		sess.close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// Shutdown stops accepting, tells clients that have not logged in
// "-ERR [SYS/TEMP]" and closes them, and waits for established sessions to
// end until ctx is done, when the rest are closed.
func (s *POP3Server) Shutdown(ctx context.Context) error {
	s.warm.close()
	s.logins.close()
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for sess := range s.sessions {
		sess.byeIfPreauth("-ERR [SYS/TEMP] relayd is shutting down")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.Close()
		return ctx.Err()
	}
}

// pop3Session is one downstream connection.
type pop3Session struct {
	conns
	ending
	srv  *POP3Server
	addr netip.Addr // the client's, as counted against the limits
	id   uint64
	log  *slog.Logger
	// implicitTLS: the listener's connections start with TLS.
	// plainAuth: the listener may take passwords before TLS (loopback).
	// tlsOn: the handshake is done. handshaking: under writeMu, a
	// handshake is running and nothing else may be written.
	implicitTLS, plainAuth, tlsOn bool
	handshaking                   bool

	writeMu sync.Mutex // guards writes to down before splicing
	// established is set, under writeMu, as the upstream's +OK is
	// written: from then on the bytes belong to the upstream session.
	established bool
	// health is the account's condition once the client logged in.
	health *health.Account
	// account is its name, once logged in; read by EndAccount.
	account atomic.Pointer[string]
	// user is the name USER gave, for the PASS that follows.
	user string
}

// accountName is the session's account, or "" before login.
func (c *pop3Session) accountName() string {
	if p := c.account.Load(); p != nil {
		return *p
	}
	return ""
}

func (c *pop3Session) writeLine(s string) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_, err := io.WriteString(c.down, s+"\r\n")
	return err
}

// byeIfPreauth writes line and closes the connection unless the session
// is already established.
func (c *pop3Session) byeIfPreauth(line string) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.established {
		return
	}
	if !c.handshaking {
		c.down.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c.down, line+"\r\n")
	}
	c.raw.Close()
}

// hangUp ends a session that sent what relayd will not read: it writes
// line, stops writing and reads what the client still sends, for a
// moment, so that closing with unread bytes does not reset the connection
// before the client has read line.
func (c *pop3Session) hangUp(line string) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.down.SetDeadline(time.Now().Add(time.Second))
	io.WriteString(c.down, line+"\r\n")
	c.closeNotify()
	if tc, ok := c.raw.(*net.TCPConn); ok {
		tc.CloseWrite()
		io.Copy(io.Discard, io.LimitReader(tc, 1<<20))
	}
	c.raw.Close()
}

// maxPOP3Errors is how many bad commands a client may send before login
// before relayd hangs up.
const maxPOP3Errors = 10

func (c *pop3Session) serve() {
	s := c.srv
	defer s.wg.Done()
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(c.log, c.health, "serving a POP3 session", v)
		}
		s.count.release(c.addr) // first: the session is over for Recorder.SessionEnd
		c.finish("pop3", s.opts.Recorder, c.log, c.raw, c.accountName())
		c.closeNotify()
		c.close()
		s.mu.Lock()
		delete(s.sessions, c)
		s.mu.Unlock()
	}()
	c.start = time.Now()
	c.log = s.log.With("conn", c.id, "remote", c.down.RemoteAddr().String())
	c.log.Debug("POP3 connection opened")

	c.down.SetDeadline(time.Now().Add(s.opts.PreauthTimeout))
	if c.implicitTLS && !c.startTLS(pop3PlaintextOnTLSPort) {
		return
	}
	// RFC 1939 §4: the greeting. No APOP timestamp: relayd has no APOP.
	if err := c.writeLine("+OK relayd POP3 ready"); err != nil {
		return
	}
	br := bufio.NewReaderSize(c.down, 1024)
	errs := 0
	for {
		if b, err := br.Peek(1); err == nil && b[0] == 0x16 && !c.tlsOn {
			// A TLS handshake record (a ClientHello) on a plaintext
			// port: it holds no line end to wait for.
			c.outcome = "TLS handshake on a plaintext port"
			c.hangUp("-ERR this port speaks plaintext POP3, not TLS")
			return
		}
		line, err := readPOP3Line(br, maxPOP3Line)
		if err != nil {
			var pe *pop3LineError
			if !errors.As(err, &pe) {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					c.outcome = "no login in time"
					c.byeIfPreauth("-ERR autologout: no login within " + s.opts.PreauthTimeout.String())
				}
				return
			}
			if errs++; pe.fatal || errs >= maxPOP3Errors {
				c.outcome = "too much invalid input"
				c.hangUp("-ERR " + pe.msg + "; too much invalid input, closing")
				return
			}
			c.writeLine("-ERR " + pe.msg)
			continue
		}
		up, acct, reply, done := c.handle(line, &br)
		switch {
		case done:
			return
		case up != nil:
			c.splice(acct, up, br)
			return
		case reply == "":
		case reply[0] == '-':
			if errs++; errs >= maxPOP3Errors {
				c.outcome = "too much invalid input"
				c.hangUp(reply + "; too many errors, closing")
				return
			}
			c.writeLine(reply)
		default:
			c.writeLine(reply)
		}
	}
}

// login checks the local credentials, logs in upstream and, on success,
// answers the client with the upstream's +OK. It returns the upstream
// connection and the account, or the reply for the client.
func (c *pop3Session) login(user, pass string) (*pop3Conn, *registry.Account, string, bool) {
	s := c.srv
	acct, log, refusal := s.local().checkLocal(c.log, user, pass, remoteIP(c.raw))
	switch refusal {
	case localLockedOut:
		return nil, nil, "-ERR [SYS/TEMP] too many failed logins for this user; try again later", false
	case localBadCredentials:
		return nil, nil, "-ERR [AUTH] invalid user name or password", false
	case localReconfiguring:
		return nil, nil, "-ERR [SYS/TEMP] the mailbox is being reconfigured; try again in a moment", false
	case localOutgoingOnly:
		return nil, nil, fmt.Sprintf("-ERR [SYS/PERM] mailbox %q is configured for outgoing mail only", acct.Config.Name), false
	}
	name := acct.Config.Name
	if acct.Config.POP3Server == "" {
		log.Error("POP3 login refused: the account has no pop3_server; set one (check-config requires it while [pop3] listens)")
		s.opts.Recorder.Login("pop3", name, "refused")
		return nil, nil, fmt.Sprintf("-ERR [SYS/PERM] mailbox %q is not available over POP3: see 'relayd status'", name), false
	}
	acct.OpenPOP3()
	// The count is given back on each way out below; this covers a
	// panic, which serve recovers.
	handedOff := false
	defer func() {
		if v := recover(); v != nil {
			if !handedOff {
				acct.ClosePOP3()
			}
			panic(v)
		}
	}()
	c.down.SetDeadline(time.Time{})
	var up *pop3Conn
	err := s.logins.run(acct.Config.POP3Server, s.opts.UpstreamTimeout, func(ctx context.Context) (err error) {
		up, err = s.loginUpstream(ctx, acct)
		return err
	})
	if err != nil {
		handedOff = true
		acct.ClosePOP3()
		text, temporary := upstreamFailure(log, "POP3", acct, err)
		s.opts.Recorder.Login("pop3", name, failedLogin(err, s.logins, s.opts.Recorder, "pop3", log))
		c.down.SetDeadline(time.Now().Add(s.opts.PreauthTimeout))
		// RFC 3206: [SYS/TEMP] may pass; [AUTH] needs a person.
		if temporary {
			return nil, nil, "-ERR [SYS/TEMP] " + text, false
		}
		return nil, nil, "-ERR [AUTH] " + text, false
	}
	c.log, c.health = log, acct.Health
	c.account.Store(&name)
	c.writeMu.Lock()
	c.established = true
	_, err = io.WriteString(c.down, up.okLine+"\r\n")
	c.writeMu.Unlock()
	handedOff = true // to splice, or released here
	if err != nil {
		acct.ClosePOP3()
		up.conn.Close()
		return nil, nil, "", true
	}
	log.Info("POP3 session logged in upstream", "upstream", up.host)
	s.opts.Recorder.Login("pop3", name, "ok")
	return up, acct, "", false
}

// splice connects the logged-in client and upstream: the bytes either
// reader had buffered first (a client may pipeline after PASS, RFC 2449
// PIPELINING), then both ways without looking at them. relayd never adds
// a line of its own to a POP3 session once logged in, so every octet of a
// RETR may pass through splice(2) unseen.
func (c *pop3Session) splice(acct *registry.Account, up *pop3Conn, downBuf *bufio.Reader) {
	c.setUp(up.conn)
	released := false
	release := func() {
		if !released {
			released = true
			acct.ClosePOP3()
		}
	}
	defer release()
	p := &splice{proto: "POP3", conns: &c.conns, down: c.down, up: up.conn, downBuf: downBuf, upBuf: up.br, cs: newOpaqueStream(),
		idle: c.srv.opts.IdleTimeout, wt: c.srv.opts.WriteTimeout, log: c.log, health: c.health,
		end: func(outcome string) {
			if outcome != "" {
				c.outcome = outcome
			}
			release()
			c.finish("pop3", c.srv.opts.Recorder, c.log, c.raw, c.accountName())
		}}
	p.run()
}
