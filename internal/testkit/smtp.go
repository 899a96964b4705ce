package testkit

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// SMTPOptions configure an SMTPUpstream.
type SMTPOptions struct {
	Style Style
	// TLS serves implicit TLS; STARTTLS offers STARTTLS (both with the
	// self-signed CertPEM).
	TLS, STARTTLS bool
	// Addr to listen on. Default 127.0.0.1:0; tests that restart an
	// upstream reuse its address.
	Addr string
}

// Message is one message an upstream accepted.
type Message struct {
	From string
	To   []string
	Data []byte
	Conn int64     // which connection delivered it (1-based)
	At   time.Time // when DATA completed
}

// SMTPUpstream is an XOAUTH2-only submission server like Exchange Online's
// or Gmail's. Replies can be scripted per recipient; accepted messages are
// recorded. Methods are safe for use from any goroutine.
type SMTPUpstream struct {
	Addr    string
	CertPEM []byte

	idp  *IdP
	opts SMTPOptions
	srv  *smtp.Server

	conns    atomic.Int64
	Logins   atomic.Int64
	Failures atomic.Int64
	down     atomic.Bool // SetDown

	mu       sync.Mutex
	messages []Message
	notify   chan struct{}
	attempts chan struct{} // after every DATA, accepted or not
	// rcptReply maps a recipient to the error RCPT TO returns for it.
	rcptReply map[string]*smtp.SMTPError
	dataReply *smtp.SMTPError
	authReply *smtp.SMTPError
	sendAs    *smtp.SMTPError
}

// NewSMTPUpstream starts a fake submission server on 127.0.0.1.
func NewSMTPUpstream(idp *IdP, opts SMTPOptions) (*SMTPUpstream, error) {
	u := &SMTPUpstream{idp: idp, opts: opts, rcptReply: map[string]*smtp.SMTPError{},
		notify: make(chan struct{}, 1), attempts: make(chan struct{}, 1)}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	tcp, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	var ln net.Listener = downListener{tcp, &u.down} // under TLS: a reset, not a failed handshake
	u.srv = smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &upSMTPSession{u: u, conn: u.conns.Add(1)}, nil
	}))
	u.srv.Domain = "upstream.test"
	u.srv.AllowInsecureAuth = true
	u.srv.EnableSMTPUTF8 = true
	u.srv.MaxMessageBytes = 200 << 20
	u.srv.MaxLineLength = 1 << 20
	u.srv.ErrorLog = nopLogger{}
	if opts.TLS || opts.STARTTLS {
		cert, pemBytes, err := SelfSigned("127.0.0.1")
		if err != nil {
			return nil, err
		}
		u.CertPEM = pemBytes
		u.srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}}
		if opts.TLS {
			ln = tls.NewListener(ln, u.srv.TLSConfig)
		}
	}
	u.Addr = ln.Addr().String()
	go u.srv.Serve(ln)
	return u, nil
}

// SetDown takes the server down (every new connection is reset before the
// greeting; sessions already open go on) or brings it back, on the same
// port.
func (u *SMTPUpstream) SetDown(down bool) { u.down.Store(down) }

type nopLogger struct{}

func (nopLogger) Printf(string, ...any) {}
func (nopLogger) Println(...any)        {}

// Close stops the server.
func (u *SMTPUpstream) Close() error { return u.srv.Close() }

// Messages returns the accepted messages.
func (u *SMTPUpstream) Messages() []Message {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]Message(nil), u.messages...)
}

// Arrived returns a channel that receives after each accepted message.
func (u *SMTPUpstream) Arrived() <-chan struct{} { return u.notify }

// Attempted returns a channel that receives after each DATA, whether the
// message was accepted or refused.
func (u *SMTPUpstream) Attempted() <-chan struct{} { return u.attempts }

// WaitMessages waits until the upstream accepted n messages and returns
// them, woken by each arrival.
func (u *SMTPUpstream) WaitMessages(t TB, n int, timeout time.Duration) []Message {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if m := u.Messages(); len(m) >= n {
			return m
		}
		select {
		case <-u.Arrived():
		case <-deadline.C:
			t.Fatal(fmt.Sprintf("upstream has %d messages after %s, want %d", len(u.Messages()), timeout, n))
			return nil
		}
	}
}

// Connections counts connections accepted so far.
func (u *SMTPUpstream) Connections() int64 { return u.conns.Load() }

// RejectRecipient makes RCPT TO for addr fail with err (nil: accept).
func (u *SMTPUpstream) RejectRecipient(addr string, err *smtp.SMTPError) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if err == nil {
		delete(u.rcptReply, strings.ToLower(addr))
	} else {
		u.rcptReply[strings.ToLower(addr)] = err
	}
}

// FailData makes the reply to DATA err (nil: accept).
func (u *SMTPUpstream) FailData(err *smtp.SMTPError) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.dataReply = err
}

// DenySendAs makes the reply to DATA err when MAIL FROM is not the
// mailbox that logged in, as Exchange answers a mailbox without Send As
// rights on the sender (554 5.2.252 SendAsDenied); nil: accept any
// sender.
func (u *SMTPUpstream) DenySendAs(err *smtp.SMTPError) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sendAs = err
}

// ErrSendAsDenied is Exchange Online's refusal of a sender the mailbox
// has no Send As right for.
var ErrSendAsDenied = &smtp.SMTPError{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 2, 252},
	Message: "SendAsDenied; the mailbox is not allowed to send as this sender; STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied"}

// FailAuth makes every AUTH fail with err, such as Exchange's 535 5.7.139
// for a tenant with SMTP AUTH disabled (nil: check tokens again).
func (u *SMTPUpstream) FailAuth(err *smtp.SMTPError) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.authReply = err
}

// SMTP AUTH disabled, as Exchange Online says it.
var ErrSMTPAuthDisabled = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 139},
	Message: "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."}

type upSMTPSession struct {
	u      *SMTPUpstream
	conn   int64
	authed bool
	user   string // the mailbox that logged in
	from   string
	to     []string
}

func (s *upSMTPSession) AuthMechanisms() []string { return []string{"XOAUTH2"} }

func (s *upSMTPSession) Auth(mech string) (sasl.Server, error) {
	if mech != "XOAUTH2" {
		return nil, &smtp.SMTPError{Code: 504, EnhancedCode: smtp.EnhancedCode{5, 5, 4}, Message: "Unrecognized authentication type"}
	}
	return &smtpXOAUTH2{s: s}, nil
}

// smtpXOAUTH2 answers as the providers do: Gmail sends a 334 challenge with
// a JSON error, then 535 5.7.8; Exchange answers 535 5.7.3 at once.
type smtpXOAUTH2 struct {
	s      *upSMTPSession
	failed bool
}

var (
	errExchangeAuth = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 3}, Message: "Authentication unsuccessful"}
	errGoogleAuth   = &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted."}
)

func (x *smtpXOAUTH2) Next(resp []byte) ([]byte, bool, error) {
	u := x.s.u
	if x.failed {
		if len(resp) != 0 {
			return nil, false, &smtp.SMTPError{Code: 501, EnhancedCode: smtp.EnhancedCode{5, 5, 2}, Message: "Invalid response to the XOAUTH2 error challenge"}
		}
		return nil, false, errGoogleAuth
	}
	if resp == nil {
		return []byte{}, false, nil
	}
	u.mu.Lock()
	forced := u.authReply
	u.mu.Unlock()
	if forced != nil {
		u.Failures.Add(1)
		return nil, false, forced
	}
	user, token, ok := ParseXOAUTH2(resp)
	if ok && u.idp.Validate(token, user) {
		x.s.authed, x.s.user = true, user
		u.Logins.Add(1)
		return nil, true, nil
	}
	u.Failures.Add(1)
	if u.opts.Style == Exchange {
		return nil, false, errExchangeAuth
	}
	x.failed = true
	return []byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`), false, nil
}

func (s *upSMTPSession) Mail(from string, opts *smtp.MailOptions) error {
	if !s.authed {
		return &smtp.SMTPError{Code: 530, EnhancedCode: smtp.EnhancedCode{5, 7, 57}, Message: "Client not authenticated to send mail"}
	}
	s.from = from
	return nil
}

func (s *upSMTPSession) Rcpt(to string, opts *smtp.RcptOptions) error {
	s.u.mu.Lock()
	err := s.u.rcptReply[strings.ToLower(to)]
	s.u.mu.Unlock()
	if err != nil {
		return err
	}
	s.to = append(s.to, to)
	return nil
}

func (s *upSMTPSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	defer func() {
		select {
		case s.u.attempts <- struct{}{}:
		default:
		}
	}()
	s.u.mu.Lock()
	if s.u.dataReply != nil {
		err := s.u.dataReply
		s.u.mu.Unlock()
		return err
	}
	if s.u.sendAs != nil && !strings.EqualFold(s.from, s.user) {
		err := s.u.sendAs
		s.u.mu.Unlock()
		return err
	}
	s.u.messages = append(s.u.messages, Message{From: s.from, To: append([]string(nil), s.to...), Data: b, Conn: s.conn, At: time.Now()})
	s.u.mu.Unlock()
	select {
	case s.u.notify <- struct{}{}:
	default:
	}
	return nil
}

func (s *upSMTPSession) Reset()        { s.from, s.to = "", nil }
func (s *upSMTPSession) Logout() error { return nil }

// StripReceived removes relayd's prepended Received: header (and its
// continuation lines) from a delivered message, for byte comparisons.
func StripReceived(b []byte) ([]byte, error) {
	if !bytes.HasPrefix(b, []byte("Received: ")) {
		return nil, errors.New("message does not start with a Received: header")
	}
	i := bytes.Index(b, []byte("\r\n"))
	for i >= 0 && i+2 < len(b) && (b[i+2] == ' ' || b[i+2] == '\t') {
		j := bytes.Index(b[i+2:], []byte("\r\n"))
		if j < 0 {
			return nil, errors.New("unterminated Received: header")
		}
		i += 2 + j
	}
	return b[i+2:], nil
}
