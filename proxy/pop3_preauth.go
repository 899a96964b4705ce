package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"strings"
	"time"

	"github.com/relayd/relayd/registry"
)

// maxPOP3Line is the longest command line, CRLF included (RFC 2449 §4).
// maxSASLLine is the longest answer to an AUTH challenge: RFC 5034 does
// not bound it by 255, and a long password in PLAIN needs more.
const (
	maxPOP3Line = 255
	maxSASLLine = 4096
	// maxPOP3Skip is how much of an over-long line relayd reads past
	// before it hangs up.
	maxPOP3Skip = 64 << 10
)

// pop3LineError is a line relayd cannot take: too long, or not text.
// After a fatal one relayd hangs up.
type pop3LineError struct {
	msg   string
	fatal bool
}

func (e *pop3LineError) Error() string { return e.msg }

// readPOP3Line reads one line of at most max octets (CRLF included) and
// returns it without its line ending (a bare LF is taken too). A longer
// line is read past and refused with a *pop3LineError, fatal when it runs
// past maxPOP3Skip.
func readPOP3Line(br *bufio.Reader, max int) (string, error) {
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if len(line)+len(chunk) > max {
			if err == nil {
				return "", &pop3LineError{msg: "line too long (RFC 2449: 255 octets at most)"}
			}
			if err != bufio.ErrBufferFull {
				return "", err
			}
			return "", skipLine(br)
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			return "", err
		}
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(line, []byte("\n")), []byte("\r"))
	for _, b := range line {
		if b < 0x20 && b != '\t' || b == 0x7f {
			return "", &pop3LineError{msg: "control characters in the command line"}
		}
	}
	return string(line), nil
}

// skipLine reads past the rest of an over-long line.
func skipLine(br *bufio.Reader) error {
	for n := 0; n < maxPOP3Skip; {
		chunk, err := br.ReadSlice('\n')
		n += len(chunk)
		if err == nil {
			return &pop3LineError{msg: "line too long (RFC 2449: 255 octets at most)"}
		}
		if err != bufio.ErrBufferFull {
			return err
		}
	}
	return &pop3LineError{msg: "line too long (RFC 2449: 255 octets at most)", fatal: true}
}

// pop3Caps is relayd's CAPA answer before login (RFC 2449 §5): USER and
// SASL PLAIN LOGIN where passwords may be sent now (on a loopback
// listener, or once TLS is on: RFC 2595 §4), RESP-CODES and AUTH-RESP-CODE
// (RFC 3206), PIPELINING (relayd reads pipelined commands in turn and
// passes on what follows the login), and STLS while the listener has a
// certificate and TLS is not on yet. The upstream's own capabilities (TOP,
// UIDL, ...) are its answer to a CAPA after login.
func (c *pop3Session) pop3Caps() string {
	caps := []string{"+OK capability list follows"}
	if c.tlsOn || c.plainAuth {
		caps = append(caps, "USER", "SASL PLAIN LOGIN")
	}
	caps = append(caps, "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING")
	if !c.tlsOn && c.srv.tlsConfig() != nil {
		caps = append(caps, "STLS")
	}
	caps = append(caps, "IMPLEMENTATION relayd", ".")
	return strings.Join(caps, "\r\n")
}

// handle runs one command of the AUTHORIZATION state (RFC 1939 §4). It
// returns the upstream connection and account once logged in, or the
// reply for the client (which serve writes and counts), or done when the
// connection is over. STLS replaces *br.
func (c *pop3Session) handle(line string, br **bufio.Reader) (up *pop3Conn, acct *registry.Account, reply string, done bool) {
	name, arg, _ := strings.Cut(line, " ")
	name = strings.ToUpper(name)
	if name == "USER" || name == "PASS" || name == "AUTH" {
		if reply, refused := c.loginDisabled(name); refused {
			c.user = ""
			return nil, nil, reply, false
		}
	}
	switch name {
	case "CAPA":
		return nil, nil, c.pop3Caps(), false
	case "USER":
		if arg == "" {
			return nil, nil, "-ERR USER needs a user name", false
		}
		c.user = arg
		return nil, nil, "+OK send PASS", false
	case "PASS":
		// RFC 1939 §7: the password is the rest of the line, spaces
		// included.
		if c.user == "" {
			return nil, nil, "-ERR give USER first", false
		}
		user := c.user
		c.user = ""
		return c.login(user, arg)
	case "AUTH":
		c.user = ""
		if arg == "" {
			// The mechanism list (RFC 1734's AUTH without an
			// argument), which clients such as fetchmail ask for.
			return nil, nil, "+OK\r\nPLAIN\r\nLOGIN\r\n.", false
		}
		user, pass, reply, ok := c.saslLogin(arg, *br)
		if !ok {
			return nil, nil, reply, reply == ""
		}
		return c.login(user, pass)
	case "STLS":
		reply, done := c.stls(br)
		return nil, nil, reply, done
	case "QUIT":
		c.outcome = "quit before login"
		c.writeLine("+OK relayd signing off")
		return nil, nil, "", true
	case "APOP":
		return nil, nil, "-ERR APOP is not supported; use USER and PASS, or AUTH PLAIN", false
	case "STAT", "LIST", "RETR", "DELE", "NOOP", "RSET", "TOP", "UIDL", "LAST":
		return nil, nil, "-ERR log in first (USER and PASS, or AUTH)", false
	}
	return nil, nil, "-ERR unknown command", false
}

// saslLogin runs AUTH PLAIN or LOGIN (RFC 5034; an initial response is
// optional, "=" is an empty one) and returns the credentials, or the reply
// that refuses them (empty when the connection failed).
func (c *pop3Session) saslLogin(arg string, br *bufio.Reader) (user, pass, reply string, ok bool) {
	mech, ir, hasIR := strings.Cut(arg, " ")
	srv := credentialsServer(mech, func(u, p string) error {
		user, pass = u, p
		return nil
	})
	if srv == nil {
		return "", "", "-ERR unsupported mechanism; use PLAIN or LOGIN", false
	}
	var resp []byte // nil: no initial response
	if hasIR {
		resp = []byte{}
		if ir != "=" {
			var err error
			if resp, err = base64.StdEncoding.DecodeString(ir); err != nil {
				return "", "", "-ERR invalid base64 in the initial response", false
			}
		}
	}
	for {
		challenge, done, err := srv.Next(resp)
		switch {
		case errors.Is(err, errAuthzid):
			return "", "", "-ERR [AUTH] logging in as another user (authzid) is not supported", false
		case err != nil:
			return "", "", "-ERR malformed " + strings.ToUpper(mech) + " response", false
		case done:
			return user, pass, "", true
		}
		if err := c.writeLine("+ " + base64.StdEncoding.EncodeToString(challenge)); err != nil {
			return "", "", "", false
		}
		line, err := readPOP3Line(br, maxSASLLine)
		if err != nil {
			var pe *pop3LineError
			if errors.As(err, &pe) && !pe.fatal {
				return "", "", "-ERR " + pe.msg, false
			}
			return "", "", "", false
		}
		if line == "*" {
			return "", "", "-ERR AUTH cancelled", false
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return "", "", "-ERR invalid base64 in the SASL response", false
		}
	}
}

// pop3PlaintextOnTLSPort answers a plaintext client on an implicit-TLS
// port.
const pop3PlaintextOnTLSPort = "-ERR this port speaks POP3 over TLS (pop3s): connect with TLS, or use the STLS port\r\n"

// loginDisabled refuses USER, PASS and AUTH (cmd) before TLS on a
// listener beyond loopback, where CAPA offered neither USER nor SASL (RFC
// 2595 §4), and returns the reply; refused is false where they may be
// used.
func (c *pop3Session) loginDisabled(cmd string) (reply string, refused bool) {
	if c.tlsOn || c.plainAuth {
		return "", false
	}
	c.log.Info("POP3 login refused before STLS on a listener beyond loopback: the client must use STLS or the implicit-TLS port", "command", cmd)
	c.srv.opts.Recorder.Login("pop3", "", "refused")
	return "-ERR [AUTH] " + cmd + " is disabled until STLS on this listener: passwords travel only inside TLS beyond the host", true
}

// stls upgrades the connection to TLS (RFC 2595 §4) and returns the
// reply for the client: "" once TLS is up (the client starts again from
// CAPA), an -ERR otherwise, or done when the connection is over. Bytes
// the client sent after STLS, before the handshake, are refused rather
// than taken as sent under TLS.
func (c *pop3Session) stls(br **bufio.Reader) (reply string, done bool) {
	switch {
	case c.tlsOn:
		return "-ERR TLS is already on", false
	case c.srv.tlsConfig() == nil:
		return "-ERR STLS is not available: this listener has no certificate", false
	case (*br).Buffered() > 0:
		return "-ERR data after STLS; send STLS alone and wait for its answer", false
	}
	if err := c.writeLine("+OK begin TLS negotiation"); err != nil {
		return "", true
	}
	if !c.startTLS("") {
		return "", true
	}
	c.user = ""
	*br = bufio.NewReaderSize(c.down, 1024)
	return "", false
}

// startTLS runs the server's TLS handshake on the client's connection and
// makes it the session's; refusal is said in plaintext to a client that
// sent no ClientHello. It reports whether TLS is on; if not, the session
// is over.
func (c *pop3Session) startTLS(refusal string) bool {
	cfg := c.srv.tlsConfig()
	if cfg == nil {
		c.outcome = "no certificate"
		c.log.Warn("POP3 connection on an implicit-TLS address closed: pop3 has no certificate now (pop3.tls_cert)")
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
		c.log.Info("POP3 TLS handshake failed", "err", err)
		return false
	}
	st := tc.ConnectionState()
	c.log.Debug("POP3 TLS on", "version", tls.VersionName(st.Version), "cipher", tls.CipherSuiteName(st.CipherSuite))
	c.raw.SetDeadline(time.Now().Add(c.srv.opts.PreauthTimeout))
	return true
}
