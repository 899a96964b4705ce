package proxy

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/queue"
)

// FuzzSMTPSession drives a downstream SMTP session with arbitrary input
// after a greeting, in every state (before and after AUTH, in MAIL, RCPT,
// DATA and BDAT): it must answer and end, never panic or hang.
func FuzzSMTPSession(f *testing.F) {
	authCmd := "AUTH PLAIN " + base64Std("\x00"+testUser+"\x00"+testPassword) + "\r\n"
	for _, s := range []string{
		"EHLO x\r\n" + authCmd + "MAIL FROM:<support@example.com>\r\nRCPT TO:<a@example.net>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n",
		"EHLO x\r\n" + authCmd + "MAIL FROM:<support@example.com>\r\nRCPT TO:<a@example.net>\r\nBDAT 5 LAST\r\nhello",
		"EHLO x\r\nAUTH LOGIN\r\naGVscGRlc2s=\r\nbGVnYWN5LXB3\r\nMAIL FROM:<x@y>\r\n",
		"HELO x\r\nMAIL FROM:<>\r\nRCPT TO:<>\r\nDATA\r\n",
		"EHLO x\r\n" + authCmd + "MAIL FROM:<support@example.com> SIZE=99999999999\r\nRCPT TO:<a@b> NOTIFY=NEVER\r\nBDAT 999999999999\r\n",
		"EHLO x\r\nAUTH PLAIN =\r\nAUTH XOAUTH2 abc\r\nSTARTTLS\r\nVRFY a\r\nRSET\r\nNOOP\r\n",
	} {
		f.Add([]byte(s))
	}
	b := relaytest.New(f)
	acct := b.Account(testkit.Account{Provider: "password", LocalUser: testUser, LocalPasswordHash: testHash,
		Direction: "outgoing", SMTPServer: b.DeadAddr(), Security: "none"}, relaytest.AccountOptions{Password: "x"})
	cfg := acct.Config
	logs, log := b.Logs, b.Log
	q := b.OpenQueue(relaytest.Registry(acct), queue.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), RetryMin: time.Hour})
	srv := NewSMTPServer(SMTPOptions{Users: localauth.NewUsers([]*config.Account{cfg}), Queue: q, Logger: log,
		AuthFailureDelay: -1, MaxMessageSize: 1 << 20, Timeout: 5 * time.Second})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Close()
	before := health.Panics()
	f.Fuzz(func(t *testing.T, in []byte) {
		out := fuzzSession(t, ln.Addr().String(), in)
		if !bytes.HasPrefix(out, []byte("220 ")) {
			t.Fatalf("no greeting: %q", out)
		}
		if n := health.Panics() - before; n != 0 {
			t.Fatalf("%d panics in sessions:\n%s", n, logs.String())
		}
	})
}
