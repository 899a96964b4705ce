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

// upstreamConn is an upstream IMAP connection being logged in.
type upstreamConn struct {
	conn net.Conn
	raw  net.Conn // the TCP connection under any TLS
	br   *bufio.Reader
	host string // for messages
	caps []string
	n    int // tag counter
	// loginText is the text of the upstream's tagged OK to AUTHENTICATE.
	loginText string
}

// unavailableError is an upstream that could not be reached or spoke
// nonsense: the client should try again later.
type unavailableError struct {
	host string
	err  error
}

func (e *unavailableError) Error() string {
	return fmt.Sprintf("upstream %s: %v", e.host, e.err)
}

func (e *unavailableError) Unwrap() error { return e.err }

// dialIMAP connects to the account's IMAP server and reads its greeting,
// upgrading with STARTTLS when configured.
func (s *IMAPServer) dialIMAP(ctx context.Context, a *registry.Account) (*upstreamConn, error) {
	return dialIMAP(ctx, a.Account, s.opts.Dialer, s.opts.UpstreamTimeout)
}

// dialIMAP is IMAPServer.dialIMAP with the server's options as arguments:
// dial dials, timeout bounds it all.
func dialIMAP(ctx context.Context, a *auth.Account, dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) (*upstreamConn, error) {
	addr := a.Config.IMAPServer
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
	if a.Config.IMAPSecurity == config.SecurityTLS {
		tc := upstreamTLS(raw, a.TLSConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fail(fmt.Errorf("TLS handshake: %w", err))
		}
		conn = tc
	}
	u := &upstreamConn{conn: conn, raw: raw, br: bufio.NewReaderSize(conn, 4096), host: host}
	greeting, err := u.readLine()
	if err != nil {
		conn.Close()
		return nil, fail(fmt.Errorf("reading greeting: %w", err))
	}
	if !strings.HasPrefix(greeting, "* OK") {
		conn.Close()
		return nil, fail(fmt.Errorf("unexpected greeting %q", truncate(greeting)))
	}
	u.caps = capsFromCode(greeting[len("* OK"):])
	if a.Config.IMAPSecurity == config.SecuritySTARTTLS {
		if _, err := u.command("STARTTLS", nil); err != nil {
			conn.Close()
			return nil, fail(fmt.Errorf("STARTTLS: %w", err))
		}
		if u.br.Buffered() > 0 {
			conn.Close()
			return nil, fail(errors.New("data after STARTTLS response (possible injection)"))
		}
		tc := upstreamTLS(raw, a.TLSConfig(host))
		if err := tc.HandshakeContext(ctx); err != nil {
			raw.Close()
			return nil, fail(fmt.Errorf("TLS handshake after STARTTLS: %w", err))
		}
		u.conn, u.br, u.caps = tc, bufio.NewReaderSize(tc, 4096), nil
	}
	if u.caps == nil {
		if u.caps, err = u.capability(); err != nil {
			u.conn.Close()
			return nil, fail(err)
		}
	}
	return u, nil
}

// authenticate runs AUTHENTICATE with the given mechanism and raw initial
// response, using SASL-IR when the upstream has it. It returns the tagged
// OK's text and the post-login capabilities, or an *upstream.Refusal.
func (u *upstreamConn) authenticate(mech string, ir []byte) (text string, caps []string, err error) {
	u.n++
	tag := fmt.Sprintf("R%d", u.n)
	enc := base64.StdEncoding.EncodeToString(ir)
	if hasCap(u.caps, "SASL-IR") {
		err = u.writeLine(tag + " AUTHENTICATE " + mech + " " + enc)
	} else {
		err = u.writeLine(tag + " AUTHENTICATE " + mech)
	}
	if err != nil {
		return "", nil, err
	}
	sentIR := hasCap(u.caps, "SASL-IR")
	for {
		line, err := u.readLine()
		if err != nil {
			return "", nil, err
		}
		switch {
		case strings.HasPrefix(line, "+"):
			if !sentIR {
				sentIR = true
				if err := u.writeLine(enc); err != nil {
					return "", nil, err
				}
				continue
			}
			// An error challenge (Google, Dovecot): answer with an empty
			// response to get the final NO.
			if err := u.writeLine(""); err != nil {
				return "", nil, err
			}
		case strings.HasPrefix(line, "* CAPABILITY "):
			caps = strings.Fields(line[len("* CAPABILITY "):])
		case strings.HasPrefix(line, "* BYE"):
			return "", nil, fmt.Errorf("upstream closed the connection: %s", truncate(line))
		case strings.HasPrefix(line, "*"):
			// other untagged data: ignore
		case strings.HasPrefix(line, tag+" OK"):
			rest := strings.TrimPrefix(line, tag+" OK")
			if c := capsFromCode(rest); c != nil {
				caps = c
				rest = rest[strings.IndexByte(rest, ']')+1:]
			}
			text = strings.TrimSpace(rest)
			if caps == nil {
				if caps, err = u.capability(); err != nil {
					return "", nil, err
				}
			}
			return text, caps, nil
		case strings.HasPrefix(line, tag+" "):
			return "", nil, &upstream.Refusal{Text: truncate(strings.TrimPrefix(line, tag+" "))}
		default:
			return "", nil, fmt.Errorf("unexpected reply %q", truncate(line))
		}
	}
}

// command sends a simple command and returns its tagged OK line.
func (u *upstreamConn) command(name string, untagged func(string)) (string, error) {
	u.n++
	tag := fmt.Sprintf("R%d", u.n)
	if err := u.writeLine(tag + " " + name); err != nil {
		return "", err
	}
	for {
		line, err := u.readLine()
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(line, tag+" ") {
			if strings.HasPrefix(line, tag+" OK") {
				return line, nil
			}
			return "", fmt.Errorf("%s failed: %s", name, truncate(line))
		}
		if untagged != nil {
			untagged(line)
		}
	}
}

func (u *upstreamConn) capability() ([]string, error) {
	var caps []string
	_, err := u.command("CAPABILITY", func(line string) {
		if c, ok := strings.CutPrefix(line, "* CAPABILITY "); ok {
			caps = strings.Fields(c)
		}
	})
	if err == nil && caps == nil {
		err = errors.New("CAPABILITY returned no capabilities")
	}
	return caps, err
}

func (u *upstreamConn) writeLine(s string) error {
	_, err := io.WriteString(u.conn, s+"\r\n")
	return err
}

// readLine reads one line of at most 64 KiB without its CRLF.
func (u *upstreamConn) readLine() (string, error) { return readUpstreamLine(u.br) }

// readUpstreamLine reads one line of an upstream's pre-login replies, of
// at most 64 KiB, without its CRLF.
func readUpstreamLine(br *bufio.Reader) (string, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > 64<<10 {
			return "", errors.New("line too long")
		}
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return "", err
		}
	}
	return strings.TrimRight(string(line), "\r\n"), nil
}

// capsFromCode extracts the capabilities of a "[CAPABILITY ...]" response
// code at the start of s, or nil.
func capsFromCode(s string) []string {
	s = strings.TrimLeft(s, " ")
	rest, ok := strings.CutPrefix(s, "[CAPABILITY ")
	if !ok {
		return nil
	}
	end := strings.IndexByte(rest, ']')
	if end < 0 {
		return nil
	}
	return strings.Fields(rest[:end])
}

func hasCap(caps []string, c string) bool {
	for _, x := range caps {
		if strings.EqualFold(x, c) {
			return true
		}
	}
	return false
}

func truncate(s string) string {
	if len(s) > 200 {
		return s[:200] + "…"
	}
	return s
}

// loginUpstream dials the account's IMAP server and logs in through
// package upstream: XOAUTH2 with the account's token (refreshed once and
// tried again on a new connection when the server refuses it), or PLAIN
// with the account's password. It returns the upstream's tagged OK text
// and post-login capabilities for the client.
func (s *IMAPServer) loginUpstream(ctx context.Context, a *registry.Account) (*upstreamConn, string, []string, error) {
	host, _, _ := net.SplitHostPort(a.Config.IMAPServer)
	u, err := upstream.Login(ctx, a.Account, health.SourceIMAP, host, func(ctx context.Context) (*upstreamConn, error) {
		if u, ok := s.warm.take(a); ok {
			u.conn.SetDeadline(time.Now().Add(s.opts.UpstreamTimeout))
			return u, nil
		}
		u, err := s.dialIMAP(ctx, a)
		if err == nil {
			u.conn.SetDeadline(time.Now().Add(s.opts.UpstreamTimeout))
		}
		return u, err
	})
	if err != nil {
		if health.AsError(err) == nil {
			err = &unavailableError{host: host, err: err}
		}
		return nil, "", nil, err
	}
	return u, u.loginText, u.caps, nil
}

// Auth implements upstream.Conn. It keeps the tagged OK's text and the
// post-login capabilities for the client.
func (u *upstreamConn) Auth(mech string, ir []byte) error {
	text, caps, err := u.authenticate(mech, ir)
	if err != nil {
		return err
	}
	u.loginText, u.caps = text, caps
	return nil
}

// Close implements upstream.Conn.
func (u *upstreamConn) Close() error { return u.conn.Close() }

// alive implements warmConn.
func (u *upstreamConn) alive() bool { return aliveConn(u.raw, u.br.Buffered()) }

// clearDeadline implements warmConn.
func (u *upstreamConn) clearDeadline() { u.conn.SetDeadline(time.Time{}) }

// newWarmPool makes the server's pool of warm upstream connections.
func (s *IMAPServer) newWarmPool() *warmPool[*upstreamConn] {
	return newWarmPool(&warmPool[*upstreamConn]{
		proto: "IMAP", log: s.log, accounts: s.opts.Accounts, opts: s.opts.Warm,
		dial:   s.dialIMAP,
		server: func(a *config.Account) string { return a.IMAPServer },
		open:   (*registry.Account).IMAPSessions,
		max:    func(a *config.Account) int { return a.IMAPConnections },
	})
}

// SyncWarm starts the warm upstream connections of the running accounts,
// and drains those of accounts a reload removed or edited: call it once
// the server is built and after each reload. Safe from any goroutine.
func (s *IMAPServer) SyncWarm() { s.warm.sync() }

// WarmStatus is the state of account name's warm connections; false when
// it keeps none.
func (s *IMAPServer) WarmStatus(name string) (WarmStatus, bool) { return s.warm.status(name) }

// CheckLogin logs account a in at its IMAP server exactly as an IMAP
// session of the proxy does (the same dial, TLS or STARTTLS, greeting,
// and upstream.Login with its one refresh and retry), then logs out: for
// relayd doctor. dial nil means a net.Dialer; timeout bounds the dial and
// the login. Errors are upstream.Login's: a *health.Error, reported to
// a.Health, or ctx.Err().
func CheckLogin(ctx context.Context, a *auth.Account, dial func(ctx context.Context, network, addr string) (net.Conn, error), timeout time.Duration) error {
	if dial == nil {
		var d net.Dialer
		dial = d.DialContext
	}
	host, _, _ := net.SplitHostPort(a.Config.IMAPServer)
	u, err := upstream.Login(ctx, a, health.SourceIMAP, host, func(ctx context.Context) (*upstreamConn, error) {
		u, err := dialIMAP(ctx, a, dial, timeout)
		if err == nil {
			u.conn.SetDeadline(time.Now().Add(timeout))
		}
		return u, err
	})
	if err != nil {
		return err
	}
	u.command("LOGOUT", nil)
	return u.Close()
}
