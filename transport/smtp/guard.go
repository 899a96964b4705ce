package smtp

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// authGuard sits between go-smtp's client and the upstream connection (above
// TLS). go-smtp v0.25.1's Client.Auth sends "*" after any AUTH error, even
// after the server's final reply ("abort the AUTH" in client.go), although
// RFC 4954 §4 allows "*" only in answer to a 334 challenge. Postfix takes
// that line for a non-SMTP command and drops the connection
// (smtpd_forbidden_commands). While armed, the guard swallows a "*" that
// follows a final reply and answers it itself, so the client and the server
// stay in step. Remove it once go-smtp sends "*" only to a challenge.
type authGuard struct {
	net.Conn
	armed atomic.Bool

	mu       sync.Mutex
	pending  []byte // read before the connection's own bytes
	cur      []byte // first bytes of the line being read
	lastCode string // reply code of the last complete line read
}

func newAuthGuard(c net.Conn) *authGuard { return &authGuard{Conn: c} }

func (g *authGuard) Read(b []byte) (int, error) {
	g.mu.Lock()
	if len(g.pending) > 0 {
		n := copy(b, g.pending)
		g.pending = g.pending[n:]
		g.mu.Unlock()
		return n, nil
	}
	g.mu.Unlock()
	n, err := g.Conn.Read(b)
	g.mu.Lock()
	for _, c := range b[:n] {
		if c == '\n' {
			g.lastCode = string(g.cur)
			g.cur = g.cur[:0]
		} else if len(g.cur) < 3 {
			g.cur = append(g.cur, c)
		}
	}
	g.mu.Unlock()
	return n, err
}

func (g *authGuard) Write(b []byte) (int, error) {
	if g.armed.Load() && string(b) == "*\r\n" {
		g.mu.Lock()
		defer g.mu.Unlock()
		if g.lastCode != "334" {
			g.pending = append(g.pending, "501 5.5.2 AUTH already ended (answered by relayd)\r\n"...)
			return len(b), nil
		}
	}
	return g.Conn.Write(b)
}

// inject makes the next reads return s first.
func (g *authGuard) inject(s string) {
	g.mu.Lock()
	g.pending = append(g.pending, s...)
	g.mu.Unlock()
}

// startTLS runs the plaintext part of an SMTP STARTTLS session (RFC 3207)
// on conn: greeting, EHLO, STARTTLS; then the TLS handshake. relayd does
// this itself rather than through go-smtp so that the authGuard can sit
// above TLS. The caller's client then greets over TLS as if anew.
func startTLS(conn net.Conn, hostname string, cfg *tls.Config, timeout time.Duration) (*tls.Conn, error) {
	conn.SetDeadline(time.Now().Add(timeout))
	defer conn.SetDeadline(time.Time{})
	tp := textproto.NewConn(conn)
	if _, _, err := tp.ReadResponse(220); err != nil {
		return nil, fmt.Errorf("greeting: %w", err)
	}
	id, err := tp.Cmd("EHLO %s", hostname)
	if err != nil {
		return nil, err
	}
	tp.StartResponse(id)
	_, ext, err := tp.ReadResponse(250)
	tp.EndResponse(id)
	if err != nil {
		return nil, fmt.Errorf("EHLO: %w", err)
	}
	if !hasExtension(ext, "STARTTLS") {
		return nil, errors.New("the server does not offer STARTTLS")
	}
	id, err = tp.Cmd("STARTTLS")
	if err != nil {
		return nil, err
	}
	tp.StartResponse(id)
	_, _, err = tp.ReadResponse(220)
	tp.EndResponse(id)
	if err != nil {
		return nil, fmt.Errorf("STARTTLS: %w", err)
	}
	if tp.R.Buffered() > 0 {
		return nil, errors.New("data after the STARTTLS reply (possible injection)")
	}
	tc := tls.Client(conn, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, fmt.Errorf("TLS handshake: %w", err)
	}
	return tc, nil
}

// hasExtension reports whether an EHLO reply's lines (joined by "\n", the
// first being the greeting) name the extension kw.
func hasExtension(ehlo, kw string) bool {
	for _, line := range strings.Split(ehlo, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.EqualFold(f[0], kw) {
			return true
		}
	}
	return false
}
