package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/upstream"
)

// FuzzLoginSASL drives the downstream PLAIN and LOGIN SASL servers with
// arbitrary responses (separated by NUL NUL in the input; a leading 0x01
// byte means no initial response): they must never panic, hand over
// credentials at most once and only when the exchange is done, and never
// hand over an empty user.
func FuzzLoginSASL(f *testing.F) {
	for _, s := range []struct {
		mech string
		in   string
	}{
		{"LOGIN", "\x01helpdesk\x00\x00legacy-pw"},
		{"LOGIN", "helpdesk\x00\x00legacy-pw"},
		{"LOGIN", "\x01\x00\x00"},
		{"login", "a\x00\x00b\x00\x00c"},
		{"PLAIN", "\x00helpdesk\x00pw"},
		{"PLAIN", "other\x00helpdesk\x00pw"},
		{"PLAIN", "\x01\x00helpdesk\x00pw"},
		{"XOAUTH2", "user=x\x01auth=Bearer y\x01\x01"},
	} {
		f.Add(s.mech, []byte(s.in))
	}
	f.Fuzz(func(t *testing.T, mech string, in []byte) {
		calls := 0
		srv := credentialsServer(mech, func(user, pass string) error {
			calls++
			if user == "" {
				t.Fatalf("credentials handed over with an empty user")
			}
			return nil
		})
		if srv == nil {
			return
		}
		var steps [][]byte
		if len(in) > 0 && in[0] == 1 {
			steps = append(steps, nil)
			in = in[1:]
		}
		steps = append(steps, bytes.Split(in, []byte{0, 0})...)
		done := false
		for _, resp := range steps {
			_, d, err := srv.Next(resp)
			if done && err == nil {
				t.Fatalf("Next after the end succeeded")
			}
			if d {
				done = true
			}
			if err != nil {
				break
			}
		}
		if calls > 1 {
			t.Fatalf("credentials handed over %d times", calls)
		}
		if calls == 1 && !done {
			t.Fatalf("credentials handed over before the exchange ended")
		}
	})
}

// FuzzUpstreamAuthReply has an upstream IMAP server answer relayd's
// AUTHENTICATE XOAUTH2 with arbitrary bytes (error challenges with JSON
// bodies, final NO lines, garbage): the login ends with a result or an
// error, never panics or hangs, and what the refusal becomes in the
// account's condition is one line without the token.
func FuzzUpstreamAuthReply(f *testing.F) {
	const token = "ya29.secret-access-token"
	for _, s := range []string{
		"+ eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==\r\nR1 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n",
		"R1 NO AUTHENTICATE failed.\r\n",
		"+ \r\n+ \r\nR1 NO x\r\n",
		"* CAPABILITY IMAP4rev1 IDLE\r\nR1 OK [CAPABILITY IMAP4rev1 MOVE] Logged in\r\n",
		"R1 OK Logged in\r\n* CAPABILITY IMAP4rev1\r\nR2 OK done\r\n",
		"* BYE Internal error\r\n",
		"R1 NO [UNAVAILABLE] try later\r\n",
		"R1 BAD \x1b[31m\r\n",
		"garbage",
	} {
		f.Add([]byte(s))
	}
	acct := &auth.Account{Config: &config.Account{Name: "support", Email: "support@example.com", Login: "support@example.com"}}
	f.Fuzz(func(t *testing.T, reply []byte) {
		cli, srv := net.Pipe()
		defer cli.Close()
		go func() {
			defer srv.Close()
			go io.Copy(io.Discard, srv)
			srv.Write(reply)
		}()
		cli.SetDeadline(time.Now().Add(5 * time.Second))
		u := &upstreamConn{conn: cli, raw: cli, br: bufio.NewReaderSize(cli, 4096), host: "upstream.test",
			caps: []string{"IMAP4rev1", "SASL-IR", "AUTH=XOAUTH2"}}
		err := u.Auth(auth.XOAUTH2, auth.XOAUTH2Response("support@example.com", token))
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("the login hung: %v", err)
		}
		var r *upstream.Refusal
		if !errors.As(err, &r) {
			return
		}
		for _, refreshed := range []bool{false, true} {
			he := upstream.Classify(acct, "upstream.test", r, refreshed)
			for _, s := range []string{he.Error(), he.Advice, he.Client} {
				if strings.ContainsAny(s, "\r\n") {
					t.Fatalf("condition text is not one line: %q", s)
				}
				if strings.Contains(s, token) {
					t.Fatalf("condition text holds the token: %q", s)
				}
			}
		}
	})
}
