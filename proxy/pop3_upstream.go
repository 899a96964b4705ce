package proxy

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/registry"
	"github.com/relayd/relayd/upstream"
)

// pop3Conn is an upstream POP3 connection being logged in. It implements
// upstream.Conn.
type pop3Conn struct {
	conn net.Conn
	raw  net.Conn // the TCP connection under any TLS
	br   *bufio.Reader
	host string // for messages
	// caps are the upstream's CAPA lines before login; nil when it has
	// no CAPA.
	caps []string
	// okLine is the upstream's +OK to the login, which the client gets.
	okLine string
}

// dialPOP3 connects to the account's POP3 server, reads its greeting,
// upgrades with STLS (RFC 2595) when configured, and asks for its
// capabilities. dial dials; timeout bounds it all.
func dialPOP3(ctx context.Context, a *auth.Account, dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) (*pop3Conn, error) {
	addr := a.Config.POP3Server
	host, _, _ := net.SplitHostPort(addr)
	fail := func(err error) error { return &unavailableError{host: host, err: err} }

	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := dial(ctx, "tcp", addr)
	if err != nil {
		return nil, fail(err)
	}
	deadline, _ := ctx.Deadline()
	raw.SetDeadline(deadline)
	conn := raw
	if a.Config.POP3Security == config.SecurityTLS {
		tc := upstreamTLS(raw, a.TLSConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fail(fmt.Errorf("TLS handshake: %w", err))
		}
		conn = tc
	}
	u := &pop3Conn{conn: conn, raw: raw, br: bufio.NewReaderSize(conn, 4096), host: host}
	greeting, err := u.readLine()
	if err != nil {
		conn.Close()
		return nil, fail(fmt.Errorf("reading greeting: %w", err))
	}
	if !strings.HasPrefix(greeting, "+OK") {
		conn.Close()
		return nil, fail(fmt.Errorf("unexpected greeting %q", truncate(greeting)))
	}
	if a.Config.POP3Security == config.SecuritySTARTTLS {
		if _, err := u.command("STLS"); err != nil {
			conn.Close()
			return nil, fail(fmt.Errorf("STLS: %w", err))
		}
		if u.br.Buffered() > 0 {
			conn.Close()
			return nil, fail(errors.New("data after the STLS response (possible injection)"))
		}
		tc := upstreamTLS(raw, a.TLSConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fail(fmt.Errorf("TLS handshake after STLS: %w", err))
		}
		u.conn, u.br = tc, bufio.NewReaderSize(tc, 4096)
	}
	if u.caps, err = u.capa(); err != nil {
		u.conn.Close()
		return nil, fail(err)
	}
	return u, nil
}

// capa asks for the capabilities (RFC 2449 §5); a server without CAPA
// answers -ERR, which gives nil.
func (u *pop3Conn) capa() ([]string, error) {
	if err := u.writeLine("CAPA"); err != nil {
		return nil, err
	}
	line, err := u.readLine()
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(line, "+OK") {
		return nil, nil
	}
	var caps []string
	for {
		line, err := u.readLine()
		if err != nil {
			return nil, err
		}
		if line == "." {
			return caps, nil
		}
		caps = append(caps, line)
		if len(caps) > 100 {
			return nil, errors.New("CAPA: too many lines")
		}
	}
}

// saslMech reports whether the upstream's CAPA offers SASL mechanism mech.
func (u *pop3Conn) saslMech(mech string) bool {
	for _, c := range u.caps {
		f := strings.Fields(c)
		if len(f) > 0 && strings.EqualFold(f[0], "SASL") {
			for _, m := range f[1:] {
				if strings.EqualFold(m, mech) {
					return true
				}
			}
		}
	}
	return false
}

// command sends a command and returns its +OK line, or an error holding
// the -ERR.
func (u *pop3Conn) command(cmd string) (string, error) {
	if err := u.writeLine(cmd); err != nil {
		return "", err
	}
	line, err := u.readLine()
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(line, "+OK") {
		return "", fmt.Errorf("%s refused: %s", strings.Fields(cmd)[0], truncate(line))
	}
	return line, nil
}

// Auth implements upstream.Conn. XOAUTH2 and PLAIN go through AUTH (RFC
// 5034) with the response sent after the server's "+", never as an
// initial response: an XOAUTH2 response outgrows the 255 octets a POP3
// command line may have. An error challenge (Google, Dovecot) is answered
// with an empty line. PLAIN falls back to USER and PASS (RFC 1939) when
// the upstream offers no SASL PLAIN. A final -ERR is an
// *upstream.Refusal.
func (u *pop3Conn) Auth(mech string, ir []byte) error {
	if mech == "PLAIN" && !u.saslMech("PLAIN") {
		return u.userPass(ir)
	}
	if err := u.writeLine("AUTH " + mech); err != nil {
		return err
	}
	sent := false
	for {
		line, err := u.readLine()
		if err != nil {
			return err
		}
		switch {
		case strings.HasPrefix(line, "+OK"):
			u.okLine = line
			return nil
		case strings.HasPrefix(line, "-ERR"):
			return &upstream.Refusal{Text: truncate(line)}
		case strings.HasPrefix(line, "+"):
			resp := ""
			if !sent {
				sent, resp = true, base64.StdEncoding.EncodeToString(ir)
			}
			if err := u.writeLine(resp); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unexpected reply to AUTH %s: %q", mech, truncate(line))
		}
	}
}

// userPass logs in with USER and PASS; ir is PLAIN's "\x00user\x00pass".
func (u *pop3Conn) userPass(ir []byte) error {
	parts := strings.SplitN(string(ir), "\x00", 3)
	if len(parts) != 3 {
		return errors.New("malformed PLAIN credentials")
	}
	for i, cmd := range []string{"USER " + parts[1], "PASS " + parts[2]} {
		if err := u.writeLine(cmd); err != nil {
			return err
		}
		line, err := u.readLine()
		if err != nil {
			return err
		}
		if strings.HasPrefix(line, "-ERR") {
			return &upstream.Refusal{Text: truncate(line)}
		}
		if !strings.HasPrefix(line, "+OK") {
			return fmt.Errorf("unexpected reply to %s: %q", strings.Fields(cmd)[0], truncate(line))
		}
		if i == 1 {
			u.okLine = line
		}
	}
	return nil
}

// Close implements upstream.Conn.
func (u *pop3Conn) Close() error { return u.conn.Close() }

// alive implements warmConn.
func (u *pop3Conn) alive() bool { return aliveConn(u.raw, u.br.Buffered()) }

// clearDeadline implements warmConn.
func (u *pop3Conn) clearDeadline() { u.conn.SetDeadline(time.Time{}) }

// newWarmPool makes the server's pool of warm upstream connections. It
// is lazy: an account's POP3 connections are kept warm from its first POP3
// login on, so that accounts read over IMAP alone do not hold POP3
// connections too.
func (s *POP3Server) newWarmPool() *warmPool[*pop3Conn] {
	return newWarmPool(&warmPool[*pop3Conn]{
		proto: "POP3", log: s.log, accounts: s.opts.Accounts, opts: s.opts.Warm, lazy: true,
		dial: func(ctx context.Context, a *registry.Account) (*pop3Conn, error) {
			return dialPOP3(ctx, a.Account, s.opts.Dialer, s.opts.UpstreamTimeout)
		},
		server: func(a *config.Account) string { return a.POP3Server },
		open:   (*registry.Account).POP3Sessions,
		max:    func(*config.Account) int { return 0 }, // providers document no POP3 limit
	})
}

// SyncWarm drains the warm connections of accounts a reload removed or
// edited (an account's pool starts at its first POP3 login). Safe from
// any goroutine.
func (s *POP3Server) SyncWarm() { s.warm.sync() }

// WarmStatus is the state of account name's warm POP3 connections; false
// when it keeps none.
func (s *POP3Server) WarmStatus(name string) (WarmStatus, bool) { return s.warm.status(name) }

func (u *pop3Conn) writeLine(s string) error {
	_, err := io.WriteString(u.conn, s+"\r\n")
	return err
}

// readLine reads one line of at most 64 KiB without its CRLF.
func (u *pop3Conn) readLine() (string, error) {
	return readUpstreamLine(u.br)
}

// loginUpstream dials the account's POP3 server and logs in through
// package upstream: XOAUTH2 with the account's token (refreshed once and
// tried again on a new connection when the server refuses it), or PLAIN
// (or USER and PASS) with the account's password.
func (s *POP3Server) loginUpstream(ctx context.Context, a *registry.Account) (*pop3Conn, error) {
	host, _, _ := net.SplitHostPort(a.Config.POP3Server)
	u, err := upstream.Login(ctx, a.Account, health.SourcePOP3, host, func(ctx context.Context) (*pop3Conn, error) {
		if u, ok := s.warm.take(a); ok {
			u.conn.SetDeadline(time.Now().Add(s.opts.UpstreamTimeout))
			return u, nil
		}
		u, err := dialPOP3(ctx, a.Account, s.opts.Dialer, s.opts.UpstreamTimeout)
		if err == nil {
			u.conn.SetDeadline(time.Now().Add(s.opts.UpstreamTimeout))
		}
		return u, err
	})
	if err != nil {
		if health.AsError(err) == nil {
			err = &unavailableError{host: host, err: err}
		}
		return nil, err
	}
	if u.okLine == "" {
		u.okLine = "+OK logged in"
	}
	return u, nil
}
