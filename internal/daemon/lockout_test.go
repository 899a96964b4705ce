package daemon

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/internal/testkit"
)

// imapLoginReply logs in over a raw connection to addr and returns the
// tagged reply, without its line end.
func imapLoginReply(t *testing.T, addr, name, pass string) string {
	t.Helper()
	c, br, err := imapGreeted(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reply, err := imapLogin(c, br, name, pass)
	if err != nil {
		t.Fatal(err)
	}
	return reply
}

// imapGreeted connects to addr and reads the greeting.
func imapGreeted(addr string) (net.Conn, *bufio.Reader, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, nil, err
	}
	c.SetDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReader(c)
	if g, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(g, "* OK ") {
		c.Close()
		return nil, nil, fmt.Errorf("greeting %q, %v", g, err)
	}
	return c, br, nil
}

// imapLogin sends LOGIN and returns the tagged reply.
func imapLogin(c net.Conn, br *bufio.Reader, name, pass string) (string, error) {
	if _, err := io.WriteString(c, "a LOGIN "+name+" "+pass+"\r\n"); err != nil {
		return "", err
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(line, "a ") {
			return strings.TrimRight(line, "\r\n"), nil
		}
	}
}

// 50 clients that log in with the right password at once on a freshly
// started relayd (a helpdesk restarting its pollers) all get in: their
// attempts share one bcrypt check and a check in flight is no failure.
func TestBurstOfCorrectLoginsAllAdmitted(t *testing.T) {
	// The cost of a real configuration, so that the first check is still
	// running while the others arrive.
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	td := startDaemon(t, func(c *testkit.Config, _ *Options) { c.Accounts[0].LocalPasswordHash = string(hash) })
	addr := td.d.IMAPAddrs()[0]
	const clients = 50
	var greeted, done sync.WaitGroup
	start := make(chan struct{})
	replies := make(chan string, clients)
	for range clients {
		greeted.Add(1)
		done.Add(1)
		go func() {
			defer done.Done()
			c, br, err := imapGreeted(addr)
			greeted.Done()
			if err != nil {
				replies <- err.Error()
				return
			}
			defer c.Close()
			<-start
			reply, err := imapLogin(c, br, user, password)
			if err != nil {
				reply = err.Error()
			}
			replies <- reply
		}()
	}
	greeted.Wait()
	close(start)
	done.Wait()
	close(replies)
	ok, other := 0, ""
	for r := range replies {
		if strings.HasPrefix(r, "a OK") {
			ok++
		} else {
			other = r
		}
	}
	if ok != clients {
		t.Errorf("%d of %d simultaneous correct logins got OK; another got %q", ok, clients, other)
	}
	if l := td.d.Status().LockedOut; len(l) != 0 {
		t.Errorf("status locked out = %+v, want nobody", l)
	}
}

// After 12 wrong passwords (a local user guessing, or a client with an old
// password) the user is locked out, but the password that last succeeded
// for it still logs in, over IMAP and SMTP; a wrong password is refused, and
// so is a correct password relayd has not seen succeed (after a reload that
// changed the hash) until the lockout ends.
func TestLockoutAdmitsThePasswordThatLastSucceeded(t *testing.T) {
	var tc *testkit.Config
	cfgPath := filepath.Join(t.TempDir(), "relayd.toml")
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		o.ConfigPath = cfgPath
		tc = c
	})
	addr := td.d.IMAPAddrs()[0]
	if got := imapLoginReply(t, addr, user, password); !strings.HasPrefix(got, "a OK") {
		t.Fatalf("first login = %q", got)
	}
	for i := range 12 {
		got := imapLoginReply(t, addr, user, fmt.Sprint("guess-", i))
		want := "a NO [AUTHENTICATIONFAILED]"
		if i >= 10 {
			want = "a NO [UNAVAILABLE] too many failed logins"
		}
		if !strings.HasPrefix(got, want) {
			t.Fatalf("wrong password %d = %q, want %s", i+1, got, want)
		}
	}
	if l := td.d.Status().LockedOut; len(l) != 1 || l[0].User != user {
		t.Fatalf("status locked out = %+v, want %s", l, user)
	}
	if got := imapLoginReply(t, addr, user, password); !strings.HasPrefix(got, "a OK") {
		t.Errorf("the password that last succeeded, while locked out = %q, want a OK", got)
	}
	if err := td.send("x@example.net", "sent while locked out"); err != nil {
		t.Errorf("SMTP with the password that last succeeded, while locked out = %v", err)
	}
	if got := imapLoginReply(t, addr, user, "guess-12"); !strings.HasPrefix(got, "a NO [UNAVAILABLE]") {
		t.Errorf("a wrong password while locked out = %q, want a NO [UNAVAILABLE]", got)
	}

	// The administrator sets a new password: relayd has not seen it
	// succeed, so it waits for the end of the lockout like any guess, and
	// the old one no longer gets in.
	const newPassword = "local-Pw-daemon-2"
	hash, _ := bcrypt.GenerateFromPassword([]byte(newPassword), bcrypt.MinCost)
	tc.IMAPListen, tc.SMTPListen = td.d.IMAPAddrs(), td.d.SMTPAddrs()
	tc.Accounts[0].LocalPasswordHash = string(hash)
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatal(err)
	}
	if got := imapLoginReply(t, addr, user, newPassword); !strings.HasPrefix(got, "a NO [UNAVAILABLE]") {
		t.Errorf("a new password never seen to succeed, while locked out = %q, want a NO [UNAVAILABLE]", got)
	}
	if got := imapLoginReply(t, addr, user, password); !strings.HasPrefix(got, "a NO [UNAVAILABLE]") {
		t.Errorf("the password of the replaced hash, while locked out = %q, want a NO [UNAVAILABLE]", got)
	}
	if n := strings.Count(td.logs.String(), "locked out after repeated failed logins"); n != 1 {
		t.Errorf("the lockout was logged %d times, want once", n)
	}
}
