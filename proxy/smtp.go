package proxy

import (
	"context"
	"crypto/tls"
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
	"unicode"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/registry"
)

// Submitter stores a message; *queue.Queue implements it.
type Submitter interface {
	Submit(*queue.Submission) (string, error)
}

// SMTPOptions configure an SMTPServer.
type SMTPOptions struct {
	// Users checks downstream credentials. Required.
	Users *localauth.Users
	// Queue stores accepted messages. Required.
	Queue  Submitter
	Logger *slog.Logger
	// Hostname names relayd in the greeting and Received: headers.
	Hostname string
	// MaxMessageSize in bytes. Default 35 MiB.
	MaxMessageSize int64
	// MaxRecipients per message. Default 500.
	MaxRecipients int
	// Timeout bounds reading a command or a chunk of data. Default 5
	// minutes (RFC 5321 §4.5.3.2).
	Timeout time.Duration
	// Limits bound the open sessions; SetLimits changes them.
	Limits Limits
	// Recorder: as IMAPOptions.
	Recorder Recorder
	// AuthFailureDelay: as IMAPOptions. Default 2s; negative disables.
	AuthFailureDelay time.Duration
	// Now is the clock of the Received: header. Default time.Now.
	Now func() time.Time
	// Accounts are the running accounts, to count a panic in one of an
	// account's sessions with its condition; may be nil.
	Accounts *registry.Registry
	// TLS returns the downstream TLS configuration, or nil while there is
	// no certificate; it is asked as each listener starts being served
	// (go-smtp fixes a server's TLS at that point). With one, plain
	// listeners offer STARTTLS and ServeTLS serves implicit TLS. Default:
	// none.
	TLS func() *tls.Config
}

// SMTPServer is the downstream submission server: AUTH PLAIN or LOGIN
// with local credentials, the envelope policy, and DATA or BDAT into the
// queue. One go-smtp server serves each listener, so plaintext AUTH can be
// allowed on loopback listeners only.
type SMTPServer struct {
	opts   SMTPOptions
	log    *slog.Logger
	nextID atomic.Uint64

	mu      sync.Mutex
	servers []*smtp.Server
	closed  bool

	sessions sessions
	count    *sessionCount
	usersNow atomic.Pointer[localauth.Users] // set by SetUsers
}

// NewSMTPServer returns a server; call Serve for each listener.
func NewSMTPServer(opts SMTPOptions) *SMTPServer {
	if opts.Recorder == nil {
		opts.Recorder = nopRecorder{}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.MaxMessageSize == 0 {
		opts.MaxMessageSize = 35 << 20
	}
	if opts.MaxRecipients == 0 {
		opts.MaxRecipients = 500
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.AuthFailureDelay == 0 {
		opts.AuthFailureDelay = 2 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &SMTPServer{opts: opts, log: opts.Logger,
		count: newSessionCount("SMTP", opts.Logger, opts.Limits, opts.Recorder)}
}

// SetLimits changes the session limits (a reload); open sessions are not
// ended, new ones are counted against the new limits.
func (s *SMTPServer) SetLimits(l Limits) { s.count.limits.Store(&l) }

// Serve accepts submissions on ln until Close or Shutdown. While the
// server has a certificate (Options.TLS) they may start TLS with STARTTLS;
// unless ln is on loopback, they must before AUTH (go-smtp answers
// 523 5.7.10, and relayd 530 5.7.0 to MAIL).
func (s *SMTPServer) Serve(ln net.Listener) error { return s.serve(ln, false) }

// ServeTLS is Serve for implicit TLS (RFC 8314 §3.3, port 465): each
// connection starts with a TLS handshake.
func (s *SMTPServer) ServeTLS(ln net.Listener) error { return s.serve(ln, true) }

func (s *SMTPServer) serve(ln net.Listener, implicitTLS bool) error {
	var tlsCfg *tls.Config
	if s.opts.TLS != nil {
		tlsCfg = s.opts.TLS()
	}
	if implicitTLS && tlsCfg == nil {
		ln.Close()
		return errors.New("implicit TLS needs a certificate (smtp.tls_cert)")
	}
	// Plaintext AUTH only where the password cannot leave the machine.
	plainAuth := plaintextAuthAllowed(ln.Addr())
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return s.newSession(c, implicitTLS || plainAuth)
	}))
	srv.Domain = s.opts.Hostname
	srv.MaxMessageBytes = s.opts.MaxMessageSize
	srv.MaxRecipients = s.opts.MaxRecipients
	srv.ReadTimeout = s.opts.Timeout
	srv.WriteTimeout = s.opts.Timeout
	srv.EnableSMTPUTF8 = true
	// Legacy software sends unwrapped HTML and base64 lines far beyond
	// RFC 5321's 998; like Postfix, accept them rather than lose the mail.
	srv.MaxLineLength = 1 << 20
	srv.ErrorLog = slogLogger{s.log}
	var inner net.Listener = &limitListener{Listener: ln, count: s.count,
		refusal: "421 4.7.0 " + s.opts.Hostname + " too many connections; try again later\r\n"}
	if implicitTLS {
		// go-smtp sees the decrypted connection: AUTH is allowed on it,
		// and it offers no STARTTLS.
		srv.AllowInsecureAuth = true
		inner = implicitTLSListener{Listener: inner, cfg: tlsCfg, timeout: s.opts.Timeout,
			refusal: "554 5.7.0 This port speaks SMTP over TLS (smtps): connect with TLS, or use the STARTTLS port\r\n"}
	} else {
		srv.AllowInsecureAuth = plainAuth
		srv.TLSConfig = tlsCfg
		inner = plaintextListener{Listener: inner, log: s.log}
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.servers = append(s.servers, srv)
	s.mu.Unlock()
	err := srv.Serve(shutdownListener{inner})
	if errors.Is(err, smtp.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return ErrServerClosed
	}
	return err
}

// Close closes the listeners and every session.
func (s *SMTPServer) Close() error {
	for _, srv := range s.stop() {
		srv.Close()
	}
	return nil
}

// Shutdown stops accepting, ends each session politely (421 between
// commands; after its 250 for a client sending a message), and waits for
// them to end until ctx ends, when the rest are closed.
func (s *SMTPServer) Shutdown(ctx context.Context) error {
	servers := s.stop()
	var wg sync.WaitGroup
	errs := make([]error, len(servers))
	for i, srv := range servers {
		wg.Add(1)
		go func() { // closes every listener at once
			defer wg.Done()
			errs[i] = srv.Shutdown(ctx)
		}()
	}
	s.sessions.endAll()
	wg.Wait()
	if ctx.Err() != nil {
		s.Close()
		return ctx.Err()
	}
	for _, err := range errs {
		if err != nil && !errors.Is(err, smtp.ErrServerClosed) {
			return err
		}
	}
	return nil
}

// SetUsers replaces the local credentials new logins are checked against
// (a reload). Safe from any goroutine.
func (s *SMTPServer) SetUsers(u *localauth.Users) { s.usersNow.Store(u) }

func (s *SMTPServer) users() *localauth.Users {
	if u := s.usersNow.Load(); u != nil {
		return u
	}
	return s.opts.Users
}

func (s *SMTPServer) loginOutcome(account, outcome string) {
	s.opts.Recorder.Login("smtp", account, outcome)
}

// SessionsByAccount counts the open SMTP sessions of each logged-in
// account.
func (s *SMTPServer) SessionsByAccount() map[string]int64 {
	m := map[string]int64{}
	s.sessions.mu.Lock()
	defer s.sessions.mu.Unlock()
	for sess := range s.sessions.open {
		if a := sess.account(); a != "" {
			m[a]++
		}
	}
	return m
}

// OpenSessions is how many SMTP sessions are open.
func (s *SMTPServer) OpenSessions() int { return s.sessions.count() }

// stop marks the server closed and returns its go-smtp servers.
func (s *SMTPServer) stop() []*smtp.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return append([]*smtp.Server(nil), s.servers...)
}

// slogLogger is go-smtp's error log. relayd recovers panics in its own
// session code (smtpSession.recover); go-smtp's own lines go to the log.
type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Printf(format string, v ...any) {
	if strings.HasPrefix(format, "panic") {
		l.log.Error(fmt.Sprintf(format, v...))
		return
	}
	l.log.Warn(fmt.Sprintf(format, v...))
}

func (l slogLogger) Println(v ...any) { l.log.Warn(fmt.Sprint(v...)) }

// newSession starts a session on c; authOK says whether the listener
// takes passwords before STARTTLS (loopback, or implicit TLS).
func (s *SMTPServer) newSession(c *smtp.Conn, authOK bool) (smtp.Session, error) {
	id := s.nextID.Add(1)
	remote := c.Conn().RemoteAddr().String()
	nc := c.Conn()
	_, isTLS := c.TLSConnectionState()
	if tc, ok := nc.(*tls.Conn); ok { // after STARTTLS
		nc = tc.NetConn()
	}
	sc, _ := nc.(*shutdownConn)
	if sc == nil {
		sc = &shutdownConn{Conn: nc}
	}
	sess := &smtpSession{srv: s, smtpConn: c, conn: sc, remote: remote, start: time.Now(),
		needTLS: !authOK && !isTLS,
		log:     s.log.With("conn", fmt.Sprintf("smtp-%d", id), "remote", remote)}
	s.sessions.add(sess)
	return sess, nil
}

// smtpSession is one downstream SMTP connection.
type smtpSession struct {
	srv      *SMTPServer
	smtpConn *smtp.Conn
	conn     *shutdownConn

	mu       sync.Mutex // guards inData and acctName
	inData   bool
	acctName string
	remote   string
	log      *slog.Logger
	acct     *config.Account
	from     string
	to       []string

	// needTLS: the listener takes no password before STARTTLS, which
	// this session has not done.
	needTLS bool

	// For the line logged at the session's end.
	start    time.Time
	messages int
	bytes    int64
}

// errNeedTLS answers MAIL before STARTTLS on a listener beyond loopback
// (RFC 3207 §4).
var errNeedTLS = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Must issue a STARTTLS command first"}

var (
	errAuthRequired = &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 0}, Message: "Authentication required: AUTH with the account's local user and password"}
	errBadAuth      = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Invalid user name or password"}
)

// errInternal answers a command whose handling failed inside relayd: the
// client keeps its message and tries again later.
var errInternal = &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Internal error: nothing was queued, try again later"}

// recover turns a panic in a session method into a 451 reply (the client
// keeps the message and retries), logged with its stack and counted.
func (s *smtpSession) recover(err *error) {
	v := recover()
	if v == nil {
		return
	}
	var h *health.Account
	if s.acct != nil && s.srv.opts.Accounts != nil {
		h = s.srv.opts.Accounts.Health(s.acct.Name)
	}
	health.Recovered(s.log, h, "serving an SMTP session", v)
	*err = errInternal
}

func (s *smtpSession) AuthMechanisms() []string { return []string{sasl.Plain, sasl.Login} }

func (s *smtpSession) Auth(mech string) (sasl.Server, error) {
	check := func(user, pass string) (err error) {
		defer s.recover(&err)
		if s.acct != nil {
			return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "Already authenticated"}
		}
		a, err := s.srv.users().CheckFrom(user, pass, remoteIP(s.conn))
		if errors.Is(err, localauth.ErrLockedOut) {
			s.log.Debug("SMTP login refused: the user is locked out", "user", user)
			s.srv.loginOutcome("", "locked_out")
			return &smtp.SMTPError{Code: 454, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Too many failed logins for this user, try again later"}
		}
		if err != nil {
			if d := s.srv.opts.AuthFailureDelay; d > 0 {
				time.Sleep(d)
			}
			s.log.Info("SMTP login failed: unknown user or wrong password", "user", user)
			s.srv.loginOutcome("", "bad_credentials")
			return errBadAuth
		}
		if !a.Direction.Outgoing() {
			s.log.Warn("SMTP login refused: the account is not configured for outgoing mail", "account", a.Name)
			s.srv.loginOutcome(a.Name, "refused")
			return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8},
				Message: fmt.Sprintf("Mailbox %q is configured for incoming mail only (direction)", a.Name)}
		}
		s.acct = a
		s.mu.Lock()
		s.acctName = a.Name
		s.mu.Unlock()
		s.srv.loginOutcome(a.Name, "ok")
		s.log = s.log.With("account", a.Name)
		s.log.Debug("SMTP login")
		return nil
	}
	switch mech {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, user, pass string) error {
			if identity != "" && identity != user {
				return &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Logging in as another user (authzid) is not supported"}
			}
			return check(user, pass)
		}), nil
	case sasl.Login:
		return newLoginServer(check), nil
	}
	return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unsupported mechanism: use PLAIN or LOGIN"}
}

func (s *smtpSession) Mail(from string, opts *smtp.MailOptions) (err error) {
	defer s.recover(&err)
	if s.acct == nil && s.needTLS {
		return errNeedTLS
	}
	if s.acct == nil {
		return errAuthRequired
	}
	if !s.mayUse(from) {
		allowed := append([]string{s.acct.Email}, s.acct.SendAs...)
		s.log.Warn("SMTP sender refused by the envelope policy", "from", from)
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 7, 1},
			Message: fmt.Sprintf("Sender <%s> not allowed for %q: use %s (or add it to send_as)", from, s.acct.Name, strings.Join(allowed, ", "))}
	}
	s.from = from
	return nil
}

// mayUse reports whether the account may send as addr: its own mailbox or
// one of its send_as addresses (case-insensitively).
func (s *smtpSession) mayUse(addr string) bool {
	if strings.EqualFold(addr, s.acct.Email) {
		return true
	}
	for _, a := range s.acct.SendAs {
		if strings.EqualFold(addr, a) {
			return true
		}
	}
	return false
}

func (s *smtpSession) Rcpt(to string, opts *smtp.RcptOptions) (err error) {
	defer s.recover(&err)
	if s.acct == nil {
		return errAuthRequired
	}
	if s.from == "" {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "MAIL FROM first"}
	}
	if !strings.Contains(to, "@") {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Recipient must be a full email address"}
	}
	if !validPath(to) {
		return &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 1, 3}, Message: "Bad recipient address syntax"}
	}
	s.to = append(s.to, to)
	return nil
}

// validPath reports whether addr, a RCPT TO path as go-smtp hands it over
// (a quoted local part already unquoted), is a mailbox (RFC 5321 §4.1.2):
// a local part without control characters, "@", and a domain of
// letter-digit-hyphen labels (any non-ASCII letter too, for SMTPUTF8 and
// IDN, RFC 6531; and "_", which RFC 5321 does not allow but internal
// names have and Postfix takes) or an address literal. What it refuses, such as a
// comment after the domain (0@0()), would make a header field that does
// not parse when the copy for Microsoft Graph names the recipients.
func validPath(addr string) bool {
	at := strings.LastIndexByte(addr, '@')
	local, domain := addr[:at], addr[at+1:]
	if local == "" || len(addr) > 320 {
		return false
	}
	for _, r := range local {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		lit := domain[1 : len(domain)-1]
		if v6, ok := strings.CutPrefix(lit, "IPv6:"); ok {
			ip, err := netip.ParseAddr(v6)
			return err == nil && ip.Is6()
		}
		ip, err := netip.ParseAddr(lit)
		return err == nil && ip.Is4()
	}
	if domain == "" || len(domain) > 255 {
		return false
	}
	for _, label := range strings.Split(domain, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, r := range label {
			if !(r == '-' || r == '_' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r > 0x7f && unicode.IsPrint(r)) {
				return false
			}
		}
	}
	return true
}

func (s *smtpSession) Data(r io.Reader) (err error) {
	defer s.recover(&err)
	s.mu.Lock()
	s.inData = true
	s.mu.Unlock()
	defer s.srv.sessions.dataDone(s)
	if s.acct == nil {
		return errAuthRequired
	}
	if len(s.to) == 0 {
		return &smtp.SMTPError{Code: 503, EnhancedCode: smtp.EnhancedCode{5, 5, 1}, Message: "RCPT TO first"}
	}
	now := s.srv.opts.Now()
	helo := s.smtpConn.Hostname()
	ip, _, _ := net.SplitHostPort(s.remote)
	trace := func(id string) string {
		// RFC 5321 §4.4; ESMTPSA per RFC 3848.
		for_ := ""
		if len(s.to) == 1 {
			for_ = "\r\n\tfor <" + s.to[0] + ">"
		}
		return fmt.Sprintf("Received: from %s ([%s])\r\n\tby %s (relayd) with ESMTPSA id %s%s;\r\n\t%s\r\n",
			helo, ip, s.srv.opts.Hostname, id, for_, now.Format(time.RFC1123Z))
	}
	fault.Hit("smtp-data")
	body := &countingReader{r: r}
	if s.acct.Graph() {
		// Graph takes about 3 MB of message per request: one that cannot
		// go that way is refused now, not bounced later. EHLO's SIZE
		// cannot say it per account; the end of DATA can.
		body.max = config.GraphMaxMessage - 4096 // room for the Received: field
	}
	id, err := s.srv.opts.Queue.Submit(&queue.Submission{
		Account: s.acct.Name, From: s.from, To: s.to, Trace: trace, Body: body,
	})
	s.bytes += body.n
	if err != nil {
		var se *smtp.SMTPError
		switch {
		case errors.As(err, &se):
			return se // too large, from go-smtp's reader
		case errors.Is(body.err, errTooLargeForGraph):
			s.log.Info("message refused: too large for Microsoft Graph, through which the account sends (transport = \"graph\")", "size_so_far", body.n, "limit", body.max)
			return &smtp.SMTPError{Code: 552, EnhancedCode: smtp.EnhancedCode{5, 3, 4},
				Message: fmt.Sprintf("Message too large for this mailbox: its provider's interface (Microsoft Graph) takes at most %d bytes", body.max)}
		case errors.Is(body.err, smtp.ErrTooLongLine):
			// The rest of the message cannot be told from commands any
			// more: answer and hang up (RFC 5321 §4.5.3.1.6 allows 1,000
			// octets; relayd takes 1 MiB, as legacy software needs).
			s.log.Warn("SMTP client sent a line longer than 1 MiB in its message; nothing was queued and the connection is closed", "size_so_far", body.n)
			s.conn.SetWriteDeadline(time.Now().Add(time.Second))
			s.conn.Conn.Write([]byte("500 5.5.2 Line too long: the message was not queued\r\n"))
			s.conn.Close()
			return &smtp.SMTPError{Code: 500, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Line too long"}
		case body.err != nil && !errors.Is(body.err, io.EOF):
			// The client went away or stalled in the middle of its message.
			s.log.Info("SMTP client ended or stalled in the middle of its message; nothing was queued", "err", body.err, "size_so_far", body.n)
			return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "The message did not arrive whole: nothing was queued"}
		}
		s.log.Error("could not queue the message; the client was told to retry later (452): check the spool's disk", "err", err)
		return &smtp.SMTPError{Code: 452, EnhancedCode: smtp.EnhancedCode{4, 3, 1}, Message: "Insufficient system storage: the message was not queued, try again later"}
	}
	s.messages++
	s.log.Info("message queued", "id", id, "from", s.from, "recipients", len(s.to), "size", body.n)
	return &smtp.SMTPError{Code: 250, EnhancedCode: smtp.EnhancedCode{2, 0, 0}, Message: "queued as " + id}
}

func (s *smtpSession) Reset() {
	s.from, s.to = "", nil
}

func (s *smtpSession) Logout() error {
	s.srv.sessions.remove(s)
	{
		name := ""
		if s.acct != nil {
			name = s.acct.Name
		}
		s.srv.opts.Recorder.SessionEnd("smtp", name, uint64(s.bytes), 0)
	}
	s.log.Info("SMTP session ended", "messages", s.messages, "bytes_in", s.bytes,
		"duration", time.Since(s.start).Round(time.Millisecond))
	return nil
}

// countingReader counts what a client sent in DATA or BDAT, and keeps the
// error that ended it: the client's fault, not the spool's.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
	// max, when not 0, ends the message with errTooLargeForGraph once
	// more than max bytes came (go-smtp discards the rest of DATA).
	max int64
}

// errTooLargeForGraph ends a message larger than a Graph account sends.
var errTooLargeForGraph = errors.New("message too large for Microsoft Graph")

func (c *countingReader) Read(b []byte) (int, error) {
	if c.max > 0 && c.n > c.max {
		c.err = errTooLargeForGraph
		return 0, c.err
	}
	n, err := c.r.Read(b)
	c.n += int64(n)
	if c.max > 0 && c.n > c.max {
		c.err = errTooLargeForGraph
		return n, c.err
	}
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}

// account is the session's account name, or "" before AUTH.
func (s *smtpSession) account() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acctName
}
