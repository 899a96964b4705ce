package daemon

import (
	"bufio"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// pop3Login logs in over POP3 and returns the open session.
func (td *testDaemon) pop3Login(addr string) (net.Conn, *bufio.Reader) {
	td.t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		td.t.Fatal(err)
	}
	return c, td.pop3LoginOn(c)
}

// pop3LoginOn logs in over POP3 on c, a new connection, and returns its
// reader.
func (td *testDaemon) pop3LoginOn(c net.Conn) *bufio.Reader {
	td.t.Helper()
	td.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(15 * time.Second))
	br := bufio.NewReader(c)
	c.Write([]byte("USER " + user + "\r\nPASS " + password + "\r\n"))
	for i, want := range []string{"+OK relayd", "+OK send PASS", "+OK User successfully authenticated."} {
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, want) {
			td.t.Fatalf("POP3 line %d = %q, %v; want %q\nlog:\n%s", i, line, err, want, td.logs.String())
		}
	}
	return br
}

// [pop3] listen opens the POP3 listener: a client logs in through it,
// status and metrics count its session, a reload keeps it going, and the
// account's removal closes it.
func TestPOP3Wiring(t *testing.T) {
	var tc *testkit.Config
	cfgPath := filepath.Join(t.TempDir(), "relayd.toml")
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.POP3Listen = []string{"127.0.0.1:0"}
		o.ConfigPath = cfgPath
		tc = c
	})
	addrs := td.d.POP3Addrs()
	if len(addrs) != 1 {
		t.Fatalf("POP3Addrs() = %v", addrs)
	}
	c, br := td.pop3Login(addrs[0])
	if st := td.d.Status(); st.Accounts[0].POP3Sessions != 1 {
		t.Errorf("status POP3 sessions = %d, want 1", st.Accounts[0].POP3Sessions)
	}
	if v := metricValue(td.scrape(), `relayd_sessions_open{account="support",protocol="pop3"}`); v != 1 {
		t.Errorf(`relayd_sessions_open{protocol="pop3"} = %v, want 1`, v)
	}

	// A reload that changes [pop3] keeps the open session.
	tc.POP3Listen = addrs
	tc.POP3 = []string{"max_sessions = 5"}
	tc.IMAPListen, tc.SMTPListen = td.d.IMAPAddrs(), td.d.SMTPAddrs()
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("STAT\r\n"))
	if line, err := br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "+OK 0 0") {
		t.Fatalf("STAT after the reload = %q, %v", line, err)
	}

	// Removing the account ends its POP3 session.
	tc.Accounts = nil
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the session of a removed account is still open")
	}
}
