package proxy

import (
	"errors"
	"io"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

// FuzzIMAPSession feeds arbitrary bytes to a whole pre-auth session: it
// must answer and end when the client is done, never panic or hang. The
// account's upstream is unreachable, so a good login ends in [UNAVAILABLE].
func FuzzIMAPSession(f *testing.F) {
	for _, s := range []string{
		"a LOGIN helpdesk legacy-pw\r\n",
		"a CAPABILITY\r\nb NOOP\r\nc LOGOUT\r\n",
		"a AUTHENTICATE PLAIN\r\nAGhlbHBkZXNrAGxlZ2FjeS1wdw==\r\n",
		"a AUTHENTICATE LOGIN\r\naGVscGRlc2s=\r\n*\r\n",
		"a LOGIN {8}\r\nhelpdesk {9+}\r\nlegacy-pw\r\n",
		"a LOGIN {5000+}\r\n", "\r\n\r\n* * *\r\n", "a ID (\"name\" {3}\r\n",
		"a ID (" + strings.Repeat(`"k" "v" `, 1200) + ")\r\nb NOOP\r\n", // over the line limit
		"a ID " + strings.Repeat("x", 9000) + "\r\nb LOGOUT\r\n",
	} {
		f.Add([]byte(s))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	deadAddr := testkit.RefusingAddr(f)
	cfg := testkit.Account{Name: "support", Provider: "password", Email: testMailbox, PasswordFile: "unread",
		LocalUser: testUser, LocalPasswordHash: testHash, Direction: "incoming",
		IMAPServer: deadAddr, Security: "none"}.Parsed(f)
	acct := registry.Wrap(&auth.Account{Config: cfg, Password: "x"})
	srv := NewIMAPServer(IMAPOptions{
		Users:            localauth.NewUsers([]*config.Account{cfg}),
		Accounts:         registry.New(map[string]*registry.Account{"support": acct}),
		Logger:           slog.New(slog.NewTextHandler(io.Discard, nil)),
		AuthFailureDelay: -1,
		PreauthTimeout:   5 * time.Second,
	})
	go srv.Serve(ln)
	defer srv.Close()
	before := health.Panics()
	f.Fuzz(func(t *testing.T, in []byte) {
		fuzzSession(t, ln.Addr().String(), in)
		if n := health.Panics() - before; n != 0 {
			t.Fatalf("%d panics", n)
		}
	})
}

// fuzzSession sends in to a server as one client would, closes its writing
// side, and returns all the server said; the session must end within 10 s.
func fuzzSession(t *testing.T, addr string, in []byte) []byte {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
	}()
	out, err := io.ReadAll(c)
	if errors.Is(err, syscall.ECONNRESET) {
		// The server ended the session with input unread (too much
		// invalid input: BYE, 421, -ERR): the kernel resets the
		// connection rather than closing it. Found by the fuzzer
		// (testdata/fuzz/FuzzIMAPSession/693e28aa0c5447b3).
		return out
	}
	if err != nil {
		t.Fatalf("session did not end: %v (got %q)", err, out)
	}
	return out
}
