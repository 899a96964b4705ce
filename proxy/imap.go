package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

// ErrServerClosed is returned by Serve after Close or Shutdown.
var ErrServerClosed = errors.New("proxy: server closed")

// preauthCaps is what relayd offers before login on a listener that takes
// passwords. LITERAL- (RFC 7888), not LITERAL+, because relayd bounds
// pre-auth literals.
const preauthCaps = "IMAP4rev1 SASL-IR LITERAL- ID AUTH=PLAIN AUTH=LOGIN"

// caps is what the session offers now: STARTTLS while it can start TLS,
// and on a listener beyond loopback LOGINDISABLED and no AUTH= until TLS
// is on (RFC 3501 §6.2.3, RFC 9051 §6.2.3).
func (c *imapSession) caps() string {
	if c.tlsOn {
		return preauthCaps
	}
	caps := "IMAP4rev1 SASL-IR LITERAL- ID"
	if c.srv.tlsConfig() != nil {
		caps += " STARTTLS"
	}
	if !c.plainAuth {
		return caps + " LOGINDISABLED"
	}
	return caps + " AUTH=PLAIN AUTH=LOGIN"
}

// IMAPOptions configure an IMAPServer. Zero values take the defaults named.
type IMAPOptions struct {
	// Users checks downstream credentials. Required.
	Users *localauth.Users
	// Accounts are the running accounts. Required.
	Accounts *registry.Registry
	Logger   *slog.Logger
	// Dialer dials upstream servers. Default: a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// PreauthTimeout bounds the time to log in. Default 60s.
	PreauthTimeout time.Duration
	// IdleTimeout ends a session whose client sent nothing for this long.
	// Default 31 minutes (RFC 3501 §5.4).
	IdleTimeout time.Duration
	// UpstreamTimeout bounds dialing and logging in upstream. Default 30s.
	UpstreamTimeout time.Duration
	// AuthFailureDelay is waited before answering a failed local login, as
	// Dovecot's auth_failure_delay. Default 2s; negative disables.
	AuthFailureDelay time.Duration
	// WriteTimeout ends a session whose client (or upstream) takes
	// nothing written to it for this long, so a stalled peer cannot pin
	// the session. Default 5 minutes.
	WriteTimeout time.Duration
	// Limits bound the open sessions; SetLimits changes them.
	Limits Limits
	// Warm tunes the warm upstream connections (pool.go); how many
	// each account keeps is its warm_connections.
	Warm WarmOptions
	// Recorder is told of logins, refusals by a limit and sessions'
	// ends, for metrics. Default: nothing is recorded.
	Recorder Recorder
	// TLS returns the downstream TLS configuration, or nil while there is
	// no certificate; it is asked at each connection, so a reload may
	// change it. With one, plain listeners offer STARTTLS and ServeTLS
	// serves implicit TLS. Default: none.
	TLS func() *tls.Config
}

// tlsConfig is the downstream TLS configuration now, or nil.
func (s *IMAPServer) tlsConfig() *tls.Config {
	if s.opts.TLS == nil {
		return nil
	}
	return s.opts.TLS()
}

// IMAPServer is the downstream IMAP listener. Its methods are safe for use
// from any goroutine.
type IMAPServer struct {
	opts IMAPOptions
	log  *slog.Logger

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	sessions  map[*imapSession]struct{}
	closed    bool
	wg        sync.WaitGroup
	nextID    atomic.Uint64

	usersNow atomic.Pointer[localauth.Users] // set by SetUsers
	count    *sessionCount
	logins   *loginGates
	warm     *warmPool[*upstreamConn]
}

// SetLimits changes the session limits (a reload); open sessions are not
// ended, new ones are counted against the new limits.
func (s *IMAPServer) SetLimits(l Limits) { s.count.limits.Store(&l) }

// NewIMAPServer returns a server; call Serve to accept connections.
func NewIMAPServer(opts IMAPOptions) *IMAPServer {
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
		opts.IdleTimeout = 31 * time.Minute
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
	s := &IMAPServer{
		opts: opts, log: opts.Logger,
		count:     newSessionCount("IMAP", opts.Logger, opts.Limits, opts.Recorder),
		logins:    newLoginGates(opts.Limits.Logins),
		listeners: map[net.Listener]struct{}{},
		sessions:  map[*imapSession]struct{}{},
	}
	s.warm = s.newWarmPool()
	return s
}

// Serve accepts plaintext connections on ln until Close or Shutdown, and
// then returns ErrServerClosed. Temporary accept errors are retried with
// backoff. They may start TLS with STARTTLS while the server has a
// certificate (Options.TLS); unless ln is on loopback, they must before
// they log in.
func (s *IMAPServer) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS is Serve for implicit TLS (RFC 8314 §3.3, port 993): each
// connection starts with a TLS handshake.
func (s *IMAPServer) ServeTLS(ln net.Listener) error { return s.serve(ln, true) }

func (s *IMAPServer) serve(ln net.Listener, implicitTLS bool) error {
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
	return acceptLoop(ln, "IMAP", s.log, s.count, "* BYE [UNAVAILABLE] too many connections; try again later\r\n", closed,
		func(c net.Conn, addr netip.Addr) bool {
			sess := &imapSession{srv: s, conns: newConns(c), id: s.nextID.Add(1), addr: addr,
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

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// SetUsers replaces the local credentials new logins are checked against
// (a reload); open sessions are not affected. Safe from any goroutine.
func (s *IMAPServer) SetUsers(u *localauth.Users) { s.usersNow.Store(u) }

func (s *IMAPServer) users() *localauth.Users {
	if u := s.usersNow.Load(); u != nil {
		return u
	}
	return s.opts.Users
}

// local is how logins are checked against the local credentials.
func (s *IMAPServer) local() localLogin {
	return localLogin{proto: "imap", users: s.users(), accounts: s.opts.Accounts, rec: s.opts.Recorder, delay: s.opts.AuthFailureDelay}
}

// EndAccount ends the open sessions of account name (it was removed from
// the configuration): "* BYE" and close. It returns how many there were.
func (s *IMAPServer) EndAccount(name, why string) int {
	s.mu.Lock()
	var l []*imapSession
	for sess := range s.sessions {
		if sess.accountName() == name {
			l = append(l, sess)
		}
	}
	s.mu.Unlock()
	deadline := time.Now().Add(time.Second) // for all of them: a reload waits for this
	for _, sess := range l {
		// A spliced session hears the BYE only between two of the
		// upstream's lines, never inside a literal.
		if sess.stream.Load() != nil {
			if !sess.byeAtBoundary(why, "account removed", deadline) {
				sess.outcomeAtomic.Store("account removed")
				sess.close()
			}
			continue
		}
		sess.writeMu.Lock()
		sess.down.SetWriteDeadline(deadline)
		io.WriteString(sess.down, "* BYE "+why+"\r\n")
		sess.writeMu.Unlock()
		sess.outcomeAtomic.Store("account removed")
		sess.close()
	}
	return len(l)
}

func (s *IMAPServer) loginOutcome(account, outcome string) {
	s.opts.Recorder.Login("imap", account, outcome)
}

// OpenSessions is how many IMAP connections are open.
func (s *IMAPServer) OpenSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sessions)
}

// Close closes the listeners and every session at once.
func (s *IMAPServer) Close() error {
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

// Shutdown stops accepting, says BYE to clients that have not logged in,
// and waits for established sessions to end until ctx is done, when the
// rest are closed.
func (s *IMAPServer) Shutdown(ctx context.Context) error {
	s.warm.close()
	s.logins.close()
	s.mu.Lock()
	s.closed = true
	for ln := range s.listeners {
		ln.Close()
	}
	for sess := range s.sessions {
		sess.byeIfPreauth("relayd is shutting down")
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.byeAtGraceEnd("relayd is shutting down")
		s.Close()
		return ctx.Err()
	}
}

// byeWriteTimeout bounds the BYE lines written at the end of a shutdown's
// grace period, all together.
const byeWriteTimeout = time.Second

// byeAtGraceEnd tells the spliced sessions still open whose upstream has
// left the client at a line boundary "* BYE [UNAVAILABLE] text" and closes
// them (RFC 9051 §7.1.5: BYE may come at any time); the others are left
// for Close. It takes at most byeWriteTimeout.
func (s *IMAPServer) byeAtGraceEnd(text string) {
	s.mu.Lock()
	open := make([]*imapSession, 0, len(s.sessions))
	for sess := range s.sessions {
		open = append(open, sess)
	}
	s.mu.Unlock()
	if len(open) == 0 {
		return
	}
	deadline := time.Now().Add(byeWriteTimeout)
	var told atomic.Int64
	var wg sync.WaitGroup
	for _, sess := range open {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sess.byeAtBoundary("[UNAVAILABLE] "+text, "relayd shut down (BYE sent)", deadline) {
				told.Add(1)
			}
		}()
	}
	wg.Wait()
	s.log.Info("IMAP shutdown: grace period over, closing the sessions still open",
		"sessions", len(open), "told_bye", told.Load())
}

// imapSession is one downstream connection.
type imapSession struct {
	conns
	ending
	srv  *IMAPServer
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
	// established is set, under writeMu, as the tagged OK of the login
	// is written: from then on the bytes belong to the upstream session.
	established bool
	// stream serialises writes to the client once spliced and knows
	// where the upstream's lines end; set by splice.
	stream atomic.Pointer[clientStream]
	// health is the account's condition once the client logged in.
	health *health.Account
	// account is its name, once logged in; read by EndAccount.
	account atomic.Pointer[string]
}

// end tells the Recorder and logs the session's one closing line (see
// ending.finish). It runs once.
func (c *imapSession) end() {
	c.finish("imap", c.srv.opts.Recorder, c.log, c.raw, c.accountName())
}

// byeAtBoundary says "* BYE text" to a spliced session's client (outcome
// is what the session log records) and closes the session, if what the
// upstream sent the client so far ends at a line boundary outside a
// literal; a write in progress is waited for until deadline, which also
// bounds the BYE's own write. It reports whether it said BYE; if not, it
// leaves the session as it was.
func (c *imapSession) byeAtBoundary(text, outcome string, deadline time.Time) bool {
	cs := c.stream.Load()
	if cs == nil || !cs.lockBy(deadline) {
		return false
	}
	defer cs.unlock()
	if !cs.atBoundary() {
		return false
	}
	c.outcomeAtomic.Store(outcome)
	c.down.SetWriteDeadline(deadline)
	_, err := io.WriteString(c.down, "* BYE "+text+"\r\n")
	c.close() // with the lock held: none of the upstream's bytes can follow
	return err == nil
}

// byeIfPreauth says BYE and closes the connection unless the session is
// already established.
func (c *imapSession) byeIfPreauth(text string) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	if c.established {
		return
	}
	if !c.handshaking {
		c.down.SetWriteDeadline(time.Now().Add(time.Second))
		io.WriteString(c.down, "* BYE "+text+"\r\n")
	}
	c.raw.Close()
}

func (c *imapSession) writeLine(s string) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	_, err := io.WriteString(c.down, s+"\r\n")
	return err
}

// lockedWriter serialises continuation requests with other writes.
type lockedWriter struct{ c *imapSession }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.c.writeMu.Lock()
	defer w.c.writeMu.Unlock()
	return w.c.down.Write(b)
}

// serve runs the session until it logs in, then hands it to a new
// goroutine (spliced).
func (c *imapSession) serve() {
	s := c.srv
	spliced := false
	defer func() {
		if !spliced {
			c.ended(recover())
		}
	}()
	c.start = time.Now()
	c.log = s.log.With("conn", c.id, "remote", c.down.RemoteAddr().String())
	c.log.Debug("IMAP connection opened")
	fault.Hit("imap-session")

	c.down.SetDeadline(time.Now().Add(s.opts.PreauthTimeout))
	if c.implicitTLS && !c.startTLS(plaintextOnTLSPort) {
		return
	}
	if err := c.writeLine("* OK [CAPABILITY " + c.caps() + "] relayd ready"); err != nil {
		return
	}
	br := bufio.NewReaderSize(c.down, 1024)
	r := &preauthReader{br: br, cont: lockedWriter{c}}
	if !c.tlsOn {
		// A TLS client on a plaintext port waits for a ServerHello that
		// never comes: tell it, and do not read its handshake as lines.
		if b, err := br.Peek(2); err == nil && isTLSClientHello(b) {
			c.outcome = "TLS handshake on a plaintext port"
			c.log.Info("IMAP client started a TLS handshake on a plaintext port: point it at an implicit-TLS address (imap.listen_tls) or make it use STARTTLS")
			c.byeIfPreauth("this port speaks plaintext IMAP (STARTTLS), not TLS")
			return
		}
	}
	for {
		cmd, err := r.readCommand()
		if err != nil {
			var pe *protoError
			if !errors.As(err, &pe) {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					c.outcome = "no login in time"
					c.byeIfPreauth("Autologout: no login within " + s.opts.PreauthTimeout.String())
				}
				return
			}
			tag := pe.tag
			if tag == "" {
				tag = "*"
			}
			c.writeLine(tag + " BAD " + pe.msg)
			if pe.fatal {
				c.outcome = "too much invalid input"
				c.byeIfPreauth("Too much invalid input")
				return
			}
			continue
		}
		acct, done := c.handle(cmd, r)
		if done {
			return
		}
		if acct != nil {
			// The login grew this goroutine's stack (the upstream's
			// TLS handshake, bcrypt); it ends once the session is
			// quiet and parks, and the stack with it.
			spliced = true
			c.splice(acct, r.br) // it ends the session
			return
		}
	}
}

// ended ends the session, after a panic v (nil: none): the goroutine
// serving it calls it last.
func (c *imapSession) ended(v any) {
	s := c.srv
	defer s.wg.Done()
	if v != nil {
		health.Recovered(c.log, c.health, "serving an IMAP session", v)
	}
	s.count.release(c.addr) // first: the session is over for Recorder.SessionEnd
	c.end()
	c.closeNotify()
	c.close()
	s.mu.Lock()
	delete(s.sessions, c)
	s.mu.Unlock()
}

// handle runs one pre-auth command. It returns the account once the upstream
// login succeeded, or done when the connection is over.
func (c *imapSession) handle(cmd *command, r *preauthReader) (acct *upstreamLogin, done bool) {
	switch cmd.name {
	case "CAPABILITY":
		if len(cmd.args) != 0 {
			c.writeLine(cmd.tag + " BAD CAPABILITY takes no arguments")
			return nil, false
		}
		c.writeLine("* CAPABILITY " + c.caps())
		c.writeLine(cmd.tag + " OK CAPABILITY completed")
	case "NOOP":
		c.writeLine(cmd.tag + " OK NOOP completed")
	case "LOGOUT":
		c.outcome = "logout before login"
		c.writeLine("* BYE logging out")
		c.writeLine(cmd.tag + " OK LOGOUT completed")
		return nil, true
	case "ID":
		// RFC 2971: relayd answers for itself; the client's ID is not
		// forwarded because the upstream session does not exist yet.
		c.writeLine(`* ID ("name" "relayd")`)
		c.writeLine(cmd.tag + " OK ID completed")
	case "STARTTLS":
		return nil, c.starttls(cmd, r)
	case "LOGIN":
		if len(cmd.args) != 2 {
			c.writeLine(cmd.tag + " BAD LOGIN expects a user name and a password")
			return nil, false
		}
		if c.loginDisabled(cmd) {
			return nil, false
		}
		return c.login(cmd.tag, cmd.args[0], cmd.args[1])
	case "AUTHENTICATE":
		if c.loginDisabled(cmd) {
			return nil, false
		}
		user, pass, ok := c.saslLogin(cmd, r)
		if !ok {
			return nil, false
		}
		return c.login(cmd.tag, user, pass)
	case "SELECT", "EXAMINE", "LIST", "LSUB", "STATUS", "APPEND", "FETCH", "SEARCH",
		"IDLE", "CREATE", "DELETE", "RENAME", "SUBSCRIBE", "UNSUBSCRIBE", "NAMESPACE", "ENABLE":
		c.writeLine(cmd.tag + " BAD " + cmd.name + " is not allowed before LOGIN")
	default:
		c.writeLine(cmd.tag + " BAD unknown command")
	}
	return nil, false
}

// saslLogin runs AUTHENTICATE PLAIN or LOGIN (RFC 3501 §6.2.2, with an
// initial response per RFC 4959) by driving go-sasl's PLAIN server or
// relayd's LOGIN server, the same ones the SMTP listener uses. It returns
// the credentials; checking them is the caller's.
func (c *imapSession) saslLogin(cmd *command, r *preauthReader) (user, pass string, ok bool) {
	if len(cmd.args) < 1 || len(cmd.args) > 2 {
		c.writeLine(cmd.tag + " BAD AUTHENTICATE expects a mechanism and an optional initial response")
		return "", "", false
	}
	srv := credentialsServer(cmd.args[0], func(u, p string) error {
		user, pass = u, p
		return nil
	})
	if srv == nil {
		c.writeLine(cmd.tag + " NO [CANNOT] unsupported mechanism; use PLAIN or LOGIN")
		return "", "", false
	}
	var resp []byte // nil: no initial response
	if len(cmd.args) == 2 {
		resp = []byte{} // "=" is an empty initial response
		if cmd.args[1] != "=" {
			var err error
			if resp, err = base64.StdEncoding.DecodeString(cmd.args[1]); err != nil {
				c.writeLine(cmd.tag + " BAD invalid base64 in the initial response")
				return "", "", false
			}
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		switch {
		case errors.Is(err, errAuthzid):
			c.writeLine(cmd.tag + " NO [AUTHORIZATIONFAILED] logging in as another user (authzid) is not supported")
			return "", "", false
		case err != nil:
			c.writeLine(cmd.tag + " BAD malformed " + strings.ToUpper(cmd.args[0]) + " response")
			return "", "", false
		case done:
			return user, pass, true
		}
		if resp, ok = c.saslChallenge(cmd.tag, challenge, r); !ok {
			return "", "", false
		}
	}
}

// saslChallenge sends a SASL challenge and reads the client's base64
// answer; "*" cancels (RFC 3501 §6.2.2).
func (c *imapSession) saslChallenge(tag string, challenge []byte, r *preauthReader) ([]byte, bool) {
	if err := c.writeLine("+ " + base64.StdEncoding.EncodeToString(challenge)); err != nil {
		return nil, false
	}
	line, err := r.readLine()
	if err != nil {
		var pe *protoError
		if errors.As(err, &pe) {
			c.writeLine(tag + " BAD " + pe.msg)
		}
		return nil, false
	}
	if string(line) == "*" {
		c.writeLine(tag + " BAD AUTHENTICATE cancelled")
		return nil, false
	}
	b, err := base64.StdEncoding.DecodeString(string(line))
	if err != nil {
		c.writeLine(tag + " BAD invalid base64 in the SASL response")
		return nil, false
	}
	return b, true
}

// upstreamLogin is a logged-in upstream connection ready to splice.
type upstreamLogin struct {
	acct *registry.Account
	up   *upstreamConn
}

func (c *imapSession) login(tag, user, pass string) (*upstreamLogin, bool) {
	s := c.srv
	acct, log, refusal := s.local().checkLocal(c.log, user, pass, remoteIP(c.raw))
	switch refusal {
	case localLockedOut:
		c.writeLine(tag + " NO [UNAVAILABLE] too many failed logins for this user; try again later")
		return nil, false
	case localBadCredentials:
		c.writeLine(tag + " NO [AUTHENTICATIONFAILED] invalid user name or password")
		return nil, false
	case localReconfiguring:
		c.writeLine(tag + " NO [UNAVAILABLE] the mailbox is being reconfigured; try again in a moment")
		return nil, false
	case localOutgoingOnly:
		c.writeLine(fmt.Sprintf("%s NO [NOPERM] mailbox %q is configured for outgoing mail only", tag, acct.Config.Name))
		return nil, false
	}
	cfgAcct := acct.Config
	if !acct.ReserveIMAP() {
		if acct.LogLimit(time.Now()) {
			log.Warn("IMAP login refused: the account has as many sessions open as its provider takes; raise imap_connections only if the provider allows more, or find the client that opens so many",
				"imap_connections", acct.Config.IMAPConnections)
		}
		s.loginOutcome(cfgAcct.Name, "limited")
		s.opts.Recorder.Refused("imap", LimitPerAccount)
		c.writeLine(tag + " NO [LIMIT] too many sessions open for this mailbox; close one or try again later")
		return nil, false
	}
	// The place is given back on each way out below, before the client
	// hears of it; this covers a panic, which serve recovers.
	handedOff := false
	defer func() {
		if v := recover(); v != nil {
			if !handedOff {
				acct.ReleaseIMAP()
			}
			panic(v)
		}
	}()
	c.down.SetDeadline(time.Time{})
	var up *upstreamConn
	var text string
	var caps []string
	err := s.logins.run(cfgAcct.IMAPServer, s.opts.UpstreamTimeout, func(ctx context.Context) (err error) {
		up, text, caps, err = s.loginUpstream(ctx, acct)
		return err
	})
	if err != nil {
		handedOff = true
		acct.ReleaseIMAP() // before the reply: the client may try again at once
		text, temporary := upstreamFailure(log, "IMAP", acct, err)
		reply := "NO [AUTHENTICATIONFAILED] " + text
		if temporary {
			reply = "NO [UNAVAILABLE] " + text
		}
		s.loginOutcome(cfgAcct.Name, failedLogin(err, s.logins, s.opts.Recorder, "imap", log))
		c.writeLine(tag + " " + reply)
		c.down.SetDeadline(time.Now().Add(s.opts.PreauthTimeout))
		return nil, false
	}
	c.log, c.health = log, acct.Health
	name := cfgAcct.Name
	c.account.Store(&name)
	if text == "" {
		text = "logged in"
	}
	c.writeMu.Lock()
	c.established = true
	_, err = io.WriteString(c.down, fmt.Sprintf("%s OK [CAPABILITY %s] %s\r\n", tag, strings.Join(caps, " "), text))
	c.writeMu.Unlock()
	handedOff = true // to splice, or released here
	if err != nil {
		acct.ReleaseIMAP()
		up.conn.Close()
		return nil, true
	}
	log.Info("IMAP session logged in upstream", "upstream", up.host)
	s.loginOutcome(cfgAcct.Name, "ok")
	return &upstreamLogin{acct: acct, up: up}, false
}

// accountName is the session's account, or "" before login.
func (c *imapSession) accountName() string {
	if p := c.account.Load(); p != nil {
		return *p
	}
	return ""
}

// remoteIP is the client's address without its port.
func remoteIP(c net.Conn) string {
	host, _, err := net.SplitHostPort(c.RemoteAddr().String())
	if err != nil {
		return c.RemoteAddr().String()
	}
	return host
}

// plaintextOnTLSPort answers a plaintext client on an implicit-TLS port.
const plaintextOnTLSPort = "* BYE this port speaks IMAP over TLS (imaps): connect with TLS, or use the STARTTLS port\r\n"

// loginDisabled refuses LOGIN and AUTHENTICATE before TLS on a listener
// beyond loopback (RFC 3501 §6.2.3 LOGINDISABLED; RFC 5530
// PRIVACYREQUIRED), and reports whether it did.
func (c *imapSession) loginDisabled(cmd *command) bool {
	if c.tlsOn || c.plainAuth {
		return false
	}
	c.log.Info("IMAP login refused before STARTTLS on a listener beyond loopback: the client must use STARTTLS or the implicit-TLS port", "command", cmd.name)
	c.srv.loginOutcome("", "refused")
	c.writeLine(cmd.tag + " NO [PRIVACYREQUIRED] " + cmd.name + " is disabled until STARTTLS on this listener: passwords travel only inside TLS beyond the host")
	return true
}

// starttls runs STARTTLS (RFC 3501 §6.2.1) and reports whether the
// connection is over.
func (c *imapSession) starttls(cmd *command, r *preauthReader) (done bool) {
	switch {
	case len(cmd.args) != 0:
		c.writeLine(cmd.tag + " BAD STARTTLS takes no arguments")
		return false
	case c.tlsOn:
		c.writeLine(cmd.tag + " BAD TLS is already on")
		return false
	case c.srv.tlsConfig() == nil:
		c.writeLine(cmd.tag + " BAD STARTTLS is not available: this listener has no certificate (imap.tls_cert)")
		return false
	case r.br.Buffered() > 0:
		// Bytes sent after STARTTLS before the handshake would be taken
		// as if they came over TLS: refuse them (RFC 3207 §6, the
		// STARTTLS command injection of CVE-2011-0411).
		c.outcome = "commands pipelined after STARTTLS"
		c.writeLine(cmd.tag + " BAD nothing may follow STARTTLS before the TLS handshake")
		c.byeIfPreauth("Too much invalid input")
		return true
	}
	if err := c.writeLine(cmd.tag + " OK Begin TLS negotiation now"); err != nil {
		return true
	}
	if !c.startTLS("") {
		return true
	}
	// RFC 3501 §6.2.1: the client must ask for capabilities again; the
	// reader starts afresh on the TLS connection.
	r.br = bufio.NewReaderSize(c.down, 1024)
	return false
}

// startTLS runs the server's TLS handshake on the client's connection and
// makes it the session's; refusal is said in plaintext to a client that
// sent no ClientHello. It reports whether TLS is on; if not, the session
// is over.
func (c *imapSession) startTLS(refusal string) bool {
	cfg := c.srv.tlsConfig()
	if cfg == nil {
		c.outcome = "no certificate"
		c.log.Warn("IMAP connection on an implicit-TLS address closed: imap has no certificate now (imap.tls_cert)")
		return false
	}
	c.writeMu.Lock()
	c.handshaking = true
	c.writeMu.Unlock()
	tc, err := handshakeTLS(c.raw, cfg, c.srv.opts.PreauthTimeout, refusal)
	c.writeMu.Lock()
	c.handshaking = false
	if err == nil {
		c.down, c.tlsOn = tc, true
	}
	c.writeMu.Unlock()
	if err != nil {
		c.outcome = "TLS handshake failed"
		c.log.Info("IMAP TLS handshake failed", "err", err)
		return false
	}
	st := tc.ConnectionState()
	c.log.Debug("IMAP TLS on", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	c.raw.SetDeadline(time.Now().Add(c.srv.opts.PreauthTimeout))
	return true
}
