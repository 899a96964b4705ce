package proxy

import (
	"bufio"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/internal/testkit"
)

func TestIMAPSessionLimit(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{Sessions: 2}})
	first := r.raw()
	r.raw()
	c, greeting := testkit.Greeting(t, r.addr)
	if want := "* BYE [UNAVAILABLE] too many connections; try again later"; greeting != want {
		t.Fatalf("third connection's greeting = %q, want %q", greeting, want)
	}
	if _, err := bufio.NewReader(c).ReadString('\n'); err == nil {
		t.Error("the refused connection stayed open")
	}
	if !strings.Contains(r.logs.String(), "IMAP connection refused: too many open sessions") {
		t.Errorf("the refusal was not logged:\n%s", r.logs.String())
	}

	// A closed session makes room at once.
	first.c.Close()
	testkit.Await(t, r.ended, "the first session's end", 10*time.Second, func(string) bool { return true })
	r.raw()
}

func TestIMAPSessionLimitPerAddress(t *testing.T) {
	r := newTestRelay(t, relayOpts{limits: Limits{PerAddress: 1}})
	r.raw() // from 127.0.0.1

	// Another address on loopback is another client.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	c, err := d.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if l, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(l, "* OK ") {
		t.Errorf("a connection from 127.0.0.2 got %q, want the greeting", l)
	}
	if _, greeting := testkit.Greeting(t, r.addr); !strings.HasPrefix(greeting, "* BYE [UNAVAILABLE]") {
		t.Errorf("a second connection from 127.0.0.1 got %q, want BYE", greeting)
	}
}

func TestIMAPSessionLimitPerAccount(t *testing.T) {
	r := newTestRelay(t, relayOpts{imapConnections: 1})
	first := r.login()
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	if got, want := rw.line(), "a NO [LIMIT] too many sessions open for this mailbox; close one or try again later"; got != want {
		t.Fatalf("second login = %q, want %q", got, want)
	}
	if n := r.acct.IMAPSessions(); n != 1 {
		t.Errorf("IMAPSessions() = %d after a refused login, want 1", n)
	}
	if !strings.Contains(r.logs.String(), "imap_connections=1") {
		t.Errorf("the log does not name the limit:\n%s", r.logs.String())
	}
	// A client retrying in a loop is not logged every time.
	rw.send("r LOGIN " + testUser + " " + testPassword + "\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "r NO [LIMIT]") {
		t.Fatalf("third login = %q", got)
	}
	if n := strings.Count(r.logs.String(), "IMAP login refused: the account has as many sessions"); n != 1 {
		t.Errorf("two refusals were logged %d times, want once", n)
	}

	// Once the first session ends the same connection may log in.
	first.Logout().Wait()
	testkit.Await(t, r.ended, "the first session's end", 10*time.Second, func(a string) bool { return a == "support" })
	rw.send("b LOGIN " + testUser + " " + testPassword + "\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "b OK ") {
		t.Fatalf("login after the first session ended = %q", got)
	}
}

// A failed upstream login gives its reservation back.
func TestIMAPSessionLimitFailedLoginReleases(t *testing.T) {
	r := newTestRelay(t, relayOpts{imapConnections: 1, upstream: refusing(t)})
	rw := r.raw()
	for _, tag := range []string{"a", "b"} {
		rw.send(tag + " LOGIN " + testUser + " " + testPassword + "\r\n")
		if got := rw.line(); !strings.HasPrefix(got, tag+" NO [UNAVAILABLE]") {
			t.Fatalf("login %s = %q, want NO [UNAVAILABLE]", tag, got)
		}
	}
	if n := r.acct.IMAPSessions(); n != 0 {
		t.Errorf("IMAPSessions() = %d, want 0", n)
	}
}

func TestSMTPSessionLimit(t *testing.T) {
	srv := NewSMTPServer(SMTPOptions{
		Hostname: "relay.test", Limits: Limits{Sessions: 1},
		Logger: discardLogger(),
	})
	released := make(chan struct{}, 10)
	srv.count.afterRelease = func() { released <- struct{}{} }
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	c, err := smtp.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		t.Fatal(err)
	}
	_, greeting := testkit.Greeting(t, ln.Addr().String())
	if want := "421 4.7.0 relay.test too many connections; try again later"; greeting != want {
		t.Fatalf("second connection's greeting = %q, want %q", greeting, want)
	}

	// QUIT frees the place.
	if err := c.Quit(); err != nil {
		t.Fatal(err)
	}
	testkit.Await(t, released, "the first session's release", 10*time.Second, func(struct{}) bool { return true })
	if _, greeting = testkit.Greeting(t, ln.Addr().String()); !strings.HasPrefix(greeting, "220 ") {
		t.Fatalf("greeting after the first session ended = %q", greeting)
	}
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func TestSessionCountReleases(t *testing.T) {
	c := newSessionCount("IMAP", discardLogger(), Limits{Sessions: 2, PerAddress: 1}, nil)
	a, b := addrOf(&fakeConn{"127.0.0.1:1"}), addrOf(&fakeConn{"[::1]:2"})
	if c.admit(a) != "" || c.admit(b) != "" {
		t.Fatal("refused below the limits")
	}
	if got := c.admit(a); got != LimitSessions {
		t.Errorf("third = %q, want %q", got, LimitSessions)
	}
	c.release(b)
	if got := c.admit(a); got != LimitPerAddress {
		t.Errorf("second from one address = %q, want %q", got, LimitPerAddress)
	}
	c.release(a)
	if len(c.byAddr) != 0 || c.total != 0 {
		t.Errorf("after releasing all: total %d, by address %v", c.total, c.byAddr)
	}
}

// fakeConn is a net.Conn with only a remote address.
type fakeConn struct{ remote string }

func (f *fakeConn) RemoteAddr() net.Addr {
	ap, err := net.ResolveTCPAddr("tcp", f.remote)
	if err != nil {
		panic(err)
	}
	return ap
}
func (f *fakeConn) Read([]byte) (int, error)         { return 0, errors.New("fake") }
func (f *fakeConn) Write([]byte) (int, error)        { return 0, errors.New("fake") }
func (f *fakeConn) Close() error                     { return nil }
func (f *fakeConn) LocalAddr() net.Addr              { return f.RemoteAddr() }
func (f *fakeConn) SetDeadline(time.Time) error      { return nil }
func (f *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (f *fakeConn) SetWriteDeadline(time.Time) error { return nil }
