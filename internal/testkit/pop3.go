package testkit

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// POP3Options configure a POP3Upstream.
type POP3Options struct {
	// Style: Exchange answers a refused token with "-ERR Authentication
	// failure: unknown user name or bad password."; Google (and Dovecot)
	// send an error challenge first, answered by an empty line.
	Style Style
	// TLS serves implicit TLS with a self-signed certificate (CertPEM).
	TLS bool
}

// POP3Upstream is an XOAUTH2-only POP3 server (RFC 1939, RFC 5034)
// holding mailboxes in memory. It takes AUTH XOAUTH2 only in the
// two-step form Exchange documents (AUTH XOAUTH2, "+", the response) or
// with an initial response; USER and PASS are refused.
type POP3Upstream struct {
	Addr    string
	CertPEM []byte

	idp  *IdP
	opts POP3Options
	ln   net.Listener
	wg   sync.WaitGroup

	mu    sync.Mutex
	boxes map[string][][]byte
	conns map[net.Conn]struct{}

	Logins   atomic.Int64 // successful XOAUTH2 logins
	Failures atomic.Int64 // refused XOAUTH2 logins
	cmdMu    sync.Mutex
	commands []string
}

// NewPOP3Upstream starts a fake POP3 server on 127.0.0.1 accepting only
// XOAUTH2 with tokens the IdP issued.
func NewPOP3Upstream(idp *IdP, opts POP3Options) (*POP3Upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &POP3Upstream{idp: idp, opts: opts, boxes: map[string][][]byte{}, conns: map[net.Conn]struct{}{}}
	if opts.TLS {
		cert, pemBytes, err := SelfSigned("127.0.0.1")
		if err != nil {
			ln.Close()
			return nil, err
		}
		u.CertPEM = pemBytes
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}})
	}
	u.ln, u.Addr = ln, ln.Addr().String()
	u.wg.Add(1)
	go func() {
		defer u.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns[c] = struct{}{}
			u.mu.Unlock()
			u.wg.Add(1)
			go func() {
				defer u.wg.Done()
				u.serve(c)
				u.mu.Lock()
				delete(u.conns, c)
				u.mu.Unlock()
				c.Close()
			}()
		}
	}()
	return u, nil
}

// Close stops the server and closes every session.
func (u *POP3Upstream) Close() error {
	err := u.ln.Close()
	u.mu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.mu.Unlock()
	u.wg.Wait()
	return err
}

// AddUser creates an empty mailbox for email.
func (u *POP3Upstream) AddUser(email string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.boxes[email] = nil
}

// Deliver adds msg to email's mailbox.
func (u *POP3Upstream) Deliver(email string, msg []byte) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if _, ok := u.boxes[email]; !ok {
		return fmt.Errorf("no mailbox %s", email)
	}
	u.boxes[email] = append(u.boxes[email], msg)
	return nil
}

// Messages returns how many messages email's mailbox holds.
func (u *POP3Upstream) Messages(email string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.boxes[email])
}

// Commands returns the names of the commands sessions sent after login.
func (u *POP3Upstream) Commands() []string {
	u.cmdMu.Lock()
	defer u.cmdMu.Unlock()
	return append([]string(nil), u.commands...)
}

// pop3Failure is Exchange's or Google's final answer to a refused token.
func (u *POP3Upstream) pop3Failure() string {
	if u.opts.Style == Exchange {
		return "-ERR Authentication failure: unknown user name or bad password."
	}
	return "-ERR [AUTH] Invalid credentials."
}

func (u *POP3Upstream) serve(c net.Conn) {
	br := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	say := func(lines ...string) {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		w.Flush()
	}
	read := func() (string, bool) {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", false
		}
		return strings.TrimRight(line, "\r\n"), true
	}
	say("+OK The fake POP3 service is ready.")
	var user string // logged in as
	var deleted map[int]bool
	for {
		line, ok := read()
		if !ok {
			return
		}
		name, arg, _ := strings.Cut(line, " ")
		name = strings.ToUpper(name)
		if user != "" {
			u.cmdMu.Lock()
			u.commands = append(u.commands, name)
			u.cmdMu.Unlock()
		}
		switch {
		case name == "CAPA":
			say("+OK", "TOP", "UIDL", "SASL XOAUTH2", "RESP-CODES", "AUTH-RESP-CODE", "PIPELINING", ".")
		case name == "QUIT":
			if user != "" {
				u.expunge(user, deleted)
			}
			say("+OK Microsoft Exchange Server POP3 server signing off.")
			return
		case user == "" && name == "AUTH":
			mech, ir, hasIR := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "XOAUTH2") {
				say("-ERR Unrecognized authentication type")
				continue
			}
			if !hasIR {
				say("+ ")
				if ir, ok = read(); !ok {
					return
				}
			}
			raw, _ := base64.StdEncoding.DecodeString(ir)
			who, token, ok := ParseXOAUTH2(raw)
			if ok && u.authorize(who, token) {
				u.Logins.Add(1)
				user, deleted = who, map[int]bool{}
				say("+OK User successfully authenticated.")
				continue
			}
			u.Failures.Add(1)
			if u.opts.Style == Google {
				say("+ " + base64.StdEncoding.EncodeToString([]byte(`{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`)))
				if l, ok := read(); !ok || l != "" {
					say("-ERR [AUTH] Invalid response to the XOAUTH2 error challenge")
					continue
				}
			}
			say(u.pop3Failure())
		case user == "" && (name == "USER" || name == "PASS"):
			say("-ERR [AUTH] plain logins are disabled: use AUTH XOAUTH2")
		case user == "":
			say("-ERR Command is not valid in this state.")
		default:
			say(u.transaction(user, name, arg, deleted)...)
		}
	}
}

// authorize checks that token was issued for email.
func (u *POP3Upstream) authorize(email, token string) bool {
	u.mu.Lock()
	_, ok := u.boxes[email]
	u.mu.Unlock()
	return ok && u.idp.Validate(token, email)
}

// transaction answers a command of the TRANSACTION state (RFC 1939 §5).
func (u *POP3Upstream) transaction(user, name, arg string, deleted map[int]bool) []string {
	u.mu.Lock()
	box := u.boxes[user]
	u.mu.Unlock()
	msg := func() ([]byte, int, string) {
		n, err := strconv.Atoi(strings.Fields(arg + " x")[0])
		if err != nil || n < 1 || n > len(box) || deleted[n] {
			return nil, 0, "-ERR no such message"
		}
		return box[n-1], n, ""
	}
	switch name {
	case "NOOP":
		return []string{"+OK"}
	case "RSET":
		clear(deleted)
		return []string{"+OK"}
	case "STAT":
		n, size := 0, 0
		for i, m := range box {
			if !deleted[i+1] {
				n, size = n+1, size+len(m)
			}
		}
		return []string{fmt.Sprintf("+OK %d %d", n, size)}
	case "LIST", "UIDL":
		out := []string{"+OK"}
		for i, m := range box {
			if deleted[i+1] {
				continue
			}
			if name == "LIST" {
				out = append(out, fmt.Sprintf("%d %d", i+1, len(m)))
			} else {
				out = append(out, fmt.Sprintf("%d uid-%d", i+1, i+1))
			}
		}
		return append(out, ".")
	case "RETR":
		m, _, e := msg()
		if e != "" {
			return []string{e}
		}
		return append([]string{fmt.Sprintf("+OK %d octets", len(m))}, dotStuff(m)...)
	case "DELE":
		_, n, e := msg()
		if e != "" {
			return []string{e}
		}
		deleted[n] = true
		return []string{"+OK"}
	}
	return []string{"-ERR Protocol error."}
}

// expunge removes the messages a session deleted, at its QUIT.
func (u *POP3Upstream) expunge(user string, deleted map[int]bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	var kept [][]byte
	for i, m := range u.boxes[user] {
		if !deleted[i+1] {
			kept = append(kept, m)
		}
	}
	u.boxes[user] = kept
}

// dotStuff splits m into the lines of a multi-line response (RFC 1939
// §3), ending with ".".
func dotStuff(m []byte) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSuffix(string(bytes.ReplaceAll(m, []byte("\r\n"), []byte("\n"))), "\n"), "\n") {
		if strings.HasPrefix(l, ".") {
			l = "." + l
		}
		out = append(out, l)
	}
	return append(out, ".")
}
