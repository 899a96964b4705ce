// Package smtp is the queue's SMTP transport: it logs in at the account's
// submission server (implicit TLS, STARTTLS or plaintext as configured;
// XOAUTH2 through package upstream, or PLAIN for a password account),
// delivers each message with MAIL FROM, RCPT TO and DATA (RFC 5321), reuses
// the connection with RSET, and classifies every reply by its codes (RFC
// 3463): 2xx sent, 4xx and provider throttles temporary, other 5xx
// permanent. The few provider replies whose text carries the meaning
// (Exchange's SubmissionQuotaExceeded) are recognised in package provider,
// not here. docs/architecture.md shows where this sits on a message's way.
package smtp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/provider"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/upstream"
)

// Options configure the transport. Zero values take the defaults named.
type Options struct {
	// Hostname names relayd in EHLO. Default "localhost".
	Hostname string
	// Timeout bounds the dial, the TLS handshake and each command.
	// Default 5 minutes (RFC 5321 §4.5.3.2 suggests longer for DATA;
	// providers answer faster).
	Timeout time.Duration
	// Dialer dials upstream servers. Default: a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Transport delivers over SMTP. It is safe for use from any goroutine.
type Transport struct{ opts Options }

// New returns an SMTP transport.
func New(opts Options) *Transport {
	if opts.Hostname == "" {
		opts.Hostname = "localhost"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	if opts.Dialer == nil {
		var d net.Dialer
		opts.Dialer = d.DialContext
	}
	return &Transport{opts: opts}
}

// Open implements queue.Transport.
func (t *Transport) Open(ctx context.Context, a *auth.Account) (queue.Conn, error) {
	host, _, _ := net.SplitHostPort(a.Config.SMTPServer)
	return upstream.Login(ctx, a, health.SourceSMTP, host, func(ctx context.Context) (*conn, error) {
		return t.dial(ctx, a)
	})
}

// dial connects to the account's SMTP server and says EHLO: implicit TLS,
// STARTTLS or plaintext as configured. Errors are outages.
func (t *Transport) dial(ctx context.Context, a *auth.Account) (*conn, error) {
	cfg := a.Config
	addr := cfg.SMTPServer
	host, _, _ := net.SplitHostPort(addr)
	dctx, cancel := context.WithTimeout(ctx, t.opts.Timeout)
	defer cancel()
	nc, err := t.opts.Dialer(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", addr, err)
	}
	var g *authGuard
	switch cfg.SMTPSecurity {
	case config.SecurityTLS:
		tc := tls.Client(nc, a.TLSConfig(host))
		if err := tc.HandshakeContext(dctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", addr, err)
		}
		g = newAuthGuard(tc)
	case config.SecurityNone:
		g = newAuthGuard(nc)
	default:
		tc, err := startTLS(nc, t.opts.Hostname, a.TLSConfig(host), t.opts.Timeout)
		if err != nil {
			nc.Close()
			return nil, fmt.Errorf("STARTTLS with %s: %w", addr, err)
		}
		g = newAuthGuard(tc)
		// The session starts anew over TLS (RFC 3207 §4.2): go-smtp's
		// client waits for a greeting that the server does not repeat.
		g.inject("220 " + host + " ESMTP (TLS established by relayd)\r\n")
	}
	c := gosmtp.NewClient(g)
	c.CommandTimeout = t.opts.Timeout
	c.SubmissionTimeout = t.opts.Timeout
	if err := c.Hello(t.opts.Hostname); err != nil {
		c.Close()
		return nil, fmt.Errorf("EHLO to %s: %w", addr, err)
	}
	return &conn{Client: c, guard: g}, nil
}

// conn is a connection to an upstream SMTP server.
type conn struct {
	*gosmtp.Client
	guard *authGuard
}

// Auth implements upstream.Conn: AUTH with the stray-"*" guard armed. A
// reply refusing it is an *upstream.Refusal.
func (c *conn) Auth(mech string, ir []byte) error {
	c.guard.armed.Store(true)
	defer c.guard.armed.Store(false)
	err := c.Client.Auth(&initialResponse{mech: mech, ir: ir})
	var se *gosmtp.SMTPError
	if errors.As(err, &se) {
		return &upstream.Refusal{Code: se.Code, Enhanced: enhanced(se), Text: replyText(se)}
	}
	return err
}

// Close implements queue.Conn: QUIT, then close.
func (c *conn) Close() error { return c.Quit() }

// initialResponse is a SASL client that sends one initial response and
// answers an error challenge (XOAUTH2's JSON, RFC 7628 §3.2.3) with an
// empty response, to get the final reply.
type initialResponse struct {
	mech     string
	ir       []byte
	answered bool
}

func (s *initialResponse) Start() (string, []byte, error) { return s.mech, s.ir, nil }

func (s *initialResponse) Next([]byte) ([]byte, error) {
	if s.answered {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	s.answered = true
	return []byte{}, nil
}

// Deliver implements queue.Conn.
func (c *conn) Deliver(ctx context.Context, m *queue.Message) ([]queue.Result, error) {
	all := func(r queue.Result) []queue.Result {
		out := make([]queue.Result, len(m.To))
		for i := range out {
			out[i] = r
		}
		return out
	}
	// The stored message is opened before the transaction starts: a spool
	// that cannot be read must not end DATA with a partial message.
	msg, err := m.Open()
	if err != nil {
		return all(queue.Result{State: queue.RcptPending, Reply: "reading the spool: " + err.Error()}), nil
	}
	defer msg.Close()
	if err := c.Mail(m.From, &gosmtp.MailOptions{Size: m.Size}); err != nil {
		r, broken := classify(err)
		if broken {
			return all(r), err
		}
		return all(r), nil
	}
	results := make([]queue.Result, len(m.To))
	var accepted []int
	for i, to := range m.To {
		r, broken := classify(c.Rcpt(to, nil))
		if broken {
			return all(r), errors.New(r.Reply)
		}
		results[i] = r
		if r.State == queue.RcptSent {
			accepted = append(accepted, i)
		}
	}
	if len(accepted) == 0 {
		return results, nil
	}
	setAccepted := func(r queue.Result) {
		for _, i := range accepted {
			results[i] = r
		}
	}
	w, err := c.Data()
	if err != nil {
		r, broken := classify(err)
		setAccepted(r)
		if broken {
			return results, err
		}
		return results, nil
	}
	if _, err := io.Copy(w, msg); err != nil {
		// Closing w would end DATA with "." and hand the upstream
		// what was sent so far: drop the connection instead (RFC 5321
		// §3.8), so that the transaction is abandoned.
		c.Client.Close()
		r := queue.Result{State: queue.RcptPending, Reply: "sending the message: " + err.Error()}
		setAccepted(r)
		return results, err
	}
	err = w.Close()
	r, broken := classify(err)
	if r.State == queue.RcptSent {
		r.Reply, r.Code = "250 accepted", 250
		fault.Hit("after-upstream-250")
	}
	setAccepted(r)
	if broken {
		return results, err
	}
	return results, nil
}

// classify maps an upstream reply to a recipient's result: sent, failed
// (permanent) or pending (retry), by its codes, never its text. Provider
// throttles are temporary even when they carry a 5xx code. broken reports
// a connection failure (no reply).
func classify(err error) (r queue.Result, broken bool) {
	if err == nil {
		return queue.Result{State: queue.RcptSent}, false
	}
	var se *gosmtp.SMTPError
	if !errors.As(err, &se) {
		return queue.Result{State: queue.RcptPending, Reply: err.Error()}, true
	}
	r = queue.Result{Reply: replyText(se), Code: se.Code, Enhanced: enhanced(se)}
	switch {
	case se.Code/100 == 2:
		r.State = queue.RcptSent
	case se.Code/100 == 4 || provider.SMTPThrottle(se.Code, se.EnhancedCode, se.Message):
		r.State = queue.RcptPending
	default:
		r.State = queue.RcptFailed
	}
	return r, false
}

// enhanced is a reply's enhanced status code, "5.1.1", or "".
func enhanced(se *gosmtp.SMTPError) string {
	if se.EnhancedCode == gosmtp.NoEnhancedCode || se.EnhancedCode == (gosmtp.EnhancedCode{}) {
		return ""
	}
	e := se.EnhancedCode
	return fmt.Sprintf("%d.%d.%d", e[0], e[1], e[2])
}

// replyText renders an SMTP reply as the server sent it, "550 5.1.1
// text", on one bounded line with its control characters escaped: it goes
// to the spool, DSNs, status and terminals.
func replyText(se *gosmtp.SMTPError) string {
	if e := enhanced(se); e != "" {
		return safetext.Line(fmt.Sprintf("%d %s %s", se.Code, e, se.Message))
	}
	return safetext.Line(fmt.Sprintf("%d %s", se.Code, se.Message))
}
