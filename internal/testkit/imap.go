package testkit

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapserver"
	"github.com/emersion/go-imap/v2/imapserver/imapmemserver"
	"github.com/emersion/go-sasl"
)

// Style selects how an upstream answers a rejected XOAUTH2 token.
type Style int

const (
	// Google (and Dovecot) send a challenge carrying a base64 JSON error;
	// the client answers with an empty line, then gets NO.
	Google Style = iota
	// Exchange answers at once with "NO AUTHENTICATE failed.".
	Exchange
)

// IMAPOptions configure an IMAPUpstream.
type IMAPOptions struct {
	Style Style
	// NoSASLIR hides the SASL-IR capability, forcing the continuation form.
	NoSASLIR bool
	// TLS serves implicit TLS with a self-signed certificate (see Cert).
	TLS bool
	// Certificate, with TLS, is served instead of a new self-signed one
	// (an expired one, one for another name); CertPEM is then its leaf.
	Certificate *tls.Certificate
	// Addr to listen on. Default 127.0.0.1:0; tests that restart an
	// upstream reuse its address.
	Addr string
}

// IMAPUpstream is an XOAUTH2-only IMAP server backed by imapmemserver.
// Mailboxes are created with AddUser.
type IMAPUpstream struct {
	Addr string
	// CertPEM is the server's certificate when TLS is on.
	CertPEM []byte

	idp  *IdP
	opts IMAPOptions
	mem  *imapmemserver.Server
	srv  *imapserver.Server
	ln   net.Listener

	mu    sync.Mutex
	users map[string]*imapmemserver.User
	// Shared lists delegates allowed to open a mailbox with their own token.
	shared map[string][]string

	Logins   atomic.Int64 // successful XOAUTH2 logins
	Failures atomic.Int64 // rejected XOAUTH2 logins
	down     atomic.Bool  // SetDown
	// Commands counts commands received per name after login, such as
	// "NOOP" or "SELECT"; for tests that check what reached the upstream.
	cmdMu    sync.Mutex
	commands []string
}

// NewIMAPUpstream starts a fake IMAP server on 127.0.0.1 that accepts only
// XOAUTH2 with tokens the IdP issued.
func NewIMAPUpstream(idp *IdP, opts IMAPOptions) (*IMAPUpstream, error) {
	u := &IMAPUpstream{
		idp: idp, opts: opts, mem: imapmemserver.New(),
		users: map[string]*imapmemserver.User{}, shared: map[string][]string{},
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	var ln net.Listener = downListener{tcp, &u.down} // under TLS: a reset, not a failed handshake
	var tlsCfg *tls.Config
	if opts.TLS {
		cert, pemBytes, err := SelfSigned("127.0.0.1")
		if err != nil {
			return nil, err
		}
		if opts.Certificate != nil {
			cert = *opts.Certificate
			pemBytes = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]})
		}
		u.CertPEM = pemBytes
		tlsCfg = &tls.Config{Certificates: []tls.Certificate{cert}}
		ln = tls.NewListener(ln, tlsCfg)
	}
	u.ln = ln
	u.Addr = ln.Addr().String()
	u.srv = imapserver.New(&imapserver.Options{
		NewSession: func(c *imapserver.Conn) (imapserver.Session, *imapserver.GreetingData, error) {
			return &upstreamSession{u: u}, nil, nil
		},
		Caps: imap.CapSet{
			imap.CapIMAP4rev1: {}, imap.CapIMAP4rev2: {},
		},
		InsecureAuth: true,
		Logger:       discardLogger{},
	})
	go u.srv.Serve(filterListener{ln, opts.NoSASLIR, u})
	return u, nil
}

// SetDown takes the server down (every new connection is reset before the
// greeting; sessions already open go on) or brings it back, on the same
// port.
func (u *IMAPUpstream) SetDown(down bool) { u.down.Store(down) }

// Close stops the server and closes every session.
func (u *IMAPUpstream) Close() error { return u.srv.Close() }

// AddUser creates a mailbox for email with an INBOX.
func (u *IMAPUpstream) AddUser(email string) *imapmemserver.User {
	u.mu.Lock()
	defer u.mu.Unlock()
	user := imapmemserver.NewUser(email, "")
	user.Create("INBOX", nil)
	u.users[email] = user
	return user
}

// ShareMailbox lets delegate open mailbox with the delegate's own token, as a
// shared mailbox in Exchange.
func (u *IMAPUpstream) ShareMailbox(mailbox, delegate string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.shared[mailbox] = append(u.shared[mailbox], delegate)
}

// Commands returns the names of the commands sessions sent after login.
func (u *IMAPUpstream) Commands() []string {
	u.cmdMu.Lock()
	defer u.cmdMu.Unlock()
	return append([]string(nil), u.commands...)
}

func (u *IMAPUpstream) recordCommand(name string) {
	u.cmdMu.Lock()
	u.commands = append(u.commands, name)
	u.cmdMu.Unlock()
}

func (u *IMAPUpstream) authorize(user, token string) *imapmemserver.User {
	u.mu.Lock()
	mb := u.users[user]
	delegates := u.shared[user]
	u.mu.Unlock()
	if mb == nil {
		return nil
	}
	if u.idp.Validate(token, user) {
		return mb
	}
	for _, d := range delegates {
		if u.idp.Validate(token, d) {
			return mb
		}
	}
	return nil
}

type upstreamSession struct {
	*imapmemserver.UserSession
	u *IMAPUpstream
}

func (s *upstreamSession) Login(username, password string) error {
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed,
		Text: "LOGIN disabled: use AUTHENTICATE XOAUTH2"}
}

func (s *upstreamSession) Close() error {
	if s.UserSession != nil {
		return s.UserSession.Close()
	}
	return nil
}

// Idle polls the mailbox while idling, as Dovecot does, instead of relying
// on imapmemserver's notification alone, which misses changes made between
// the "+ idling" continuation and the start of its wait.
func (s *upstreamSession) Idle(w *imapserver.UpdateWriter, stop <-chan struct{}) error {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		if err := s.UserSession.Poll(w, true); err != nil {
			return err
		}
		select {
		case <-stop:
			return nil
		case <-t.C:
		}
	}
}

func (s *upstreamSession) AuthenticateMechanisms() []string { return []string{"XOAUTH2"} }

func (s *upstreamSession) Authenticate(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" {
		return nil, &imap.Error{Type: imap.StatusResponseTypeNo, Text: "Unsupported authentication mechanism"}
	}
	return &xoauth2Server{style: s.u.opts.Style, check: func(user, token string) bool {
		mb := s.u.authorize(user, token)
		if mb == nil {
			s.u.Failures.Add(1)
			return false
		}
		s.UserSession = imapmemserver.NewUserSession(mb)
		s.u.Logins.Add(1)
		return true
	}}, nil
}

// xoauth2Server is the server side of XOAUTH2 as Google and Exchange behave.
type xoauth2Server struct {
	style   Style
	check   func(user, token string) bool
	started bool
	failed  bool
}

func (s *xoauth2Server) Next(resp []byte) ([]byte, bool, error) {
	if s.failed {
		// The client's answer to the error challenge must be empty.
		if len(resp) != 0 {
			return nil, false, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Invalid response to the XOAUTH2 error challenge"}
		}
		return nil, false, authFailed(s.style)
	}
	if !s.started && resp == nil {
		s.started = true
		return []byte{}, false, nil // ask for the initial response
	}
	s.started = true
	user, token, ok := ParseXOAUTH2(resp)
	if ok && s.check(user, token) {
		return nil, true, nil
	}
	if !ok {
		return nil, false, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Invalid SASL XOAUTH2 response"}
	}
	if s.style == Exchange {
		return nil, false, authFailed(s.style)
	}
	s.failed = true
	return []byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`), false, nil
}

func authFailed(style Style) error {
	if style == Exchange {
		return &imap.Error{Type: imap.StatusResponseTypeNo, Text: "AUTHENTICATE failed."}
	}
	return &imap.Error{Type: imap.StatusResponseTypeNo, Code: imap.ResponseCodeAuthenticationFailed,
		Text: "Invalid credentials (Failure)"}
}

// ParseXOAUTH2 splits an XOAUTH2 initial response into user and token.
func ParseXOAUTH2(b []byte) (user, token string, ok bool) {
	parts := strings.Split(string(b), "\x01")
	if len(parts) != 4 || parts[2] != "" || parts[3] != "" {
		return "", "", false
	}
	user, ok1 := strings.CutPrefix(parts[0], "user=")
	token, ok2 := strings.CutPrefix(parts[1], "auth=Bearer ")
	return user, token, ok1 && ok2 && user != "" && token != ""
}

// EncodeXOAUTH2 is the base64 initial response for user and token, for tests
// that speak to an upstream directly.
func EncodeXOAUTH2(user, token string) string {
	return base64.StdEncoding.EncodeToString([]byte("user=" + user + "\x01auth=Bearer " + token + "\x01\x01"))
}

// filterListener removes SASL-IR from capability lines when asked, and
// records post-login command names.
type filterListener struct {
	net.Listener
	noSASLIR bool
	u        *IMAPUpstream
}

func (l filterListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &filterConn{Conn: c, noSASLIR: l.noSASLIR, u: l.u}, nil
}

type filterConn struct {
	net.Conn
	noSASLIR bool
	u        *IMAPUpstream
	partial  []byte
}

func (c *filterConn) Write(b []byte) (int, error) {
	if c.noSASLIR && bytes.Contains(b, []byte(" SASL-IR")) {
		out := bytes.ReplaceAll(b, []byte(" SASL-IR"), nil)
		if _, err := c.Conn.Write(out); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

func (c *filterConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.partial = append(c.partial, b[:n]...)
	for {
		i := bytes.IndexByte(c.partial, '\n')
		if i < 0 {
			break
		}
		line := string(c.partial[:i])
		c.partial = c.partial[i+1:]
		if f := strings.Fields(line); len(f) >= 2 {
			name := strings.ToUpper(f[1])
			if name == "UID" && len(f) >= 3 {
				name += " " + strings.ToUpper(f[2])
			}
			c.u.recordCommand(name)
		}
	}
	if len(c.partial) > 4096 { // inside a literal: don't hoard it
		c.partial = c.partial[:0]
	}
	return n, err
}

type discardLogger struct{}

func (discardLogger) Printf(string, ...any) {}

// Deliver appends msg to the INBOX of email.
func (u *IMAPUpstream) Deliver(email string, msg []byte) error {
	u.mu.Lock()
	user := u.users[email]
	u.mu.Unlock()
	if user == nil {
		return fmt.Errorf("no mailbox %s", email)
	}
	_, err := user.Append("INBOX", literal{bytes.NewReader(msg), int64(len(msg))}, &imap.AppendOptions{})
	return err
}

type literal struct {
	*bytes.Reader
	size int64
}

func (l literal) Size() int64 { return l.size }
