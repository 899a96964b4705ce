package daemon

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/sys/unix"

	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/status"
)

// floodNoFile is the open-file limit of the flooded relayd, and
// floodConns how many idle connections another process opens to each of
// its status socket and metrics listener: more than the limit.
const (
	floodNoFile = 1024
	floodConns  = 1100
)

// A local user who opens more idle keep-alive connections than relayd has
// descriptors, to the status socket and to [metrics] listen, each after
// one request, cannot stop the mail: IMAP logins and SMTP submissions
// keep working, and every idle connection is closed (those beyond the
// caps at once, the others after IdleTimeout).
func TestIdleConnectionsLeaveDescriptorsForMail(t *testing.T) {
	if os.Getenv("RELAYD_FLOOD_CHILD") != "" {
		t.Skip("in the child")
	}
	// relayd runs in a child process (TestFloodedDaemon) under the low
	// limit; this process floods it.
	cmd := exec.Command(os.Args[0], "-test.run=^TestFloodedDaemon$", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "RELAYD_FLOOD_CHILD=1")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.SyncBuffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	t.Cleanup(func() {
		stdin.Close() // the child shuts relayd down and exits
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("relayd log:\n%s", logs.String())
		}
	})
	addrs := make(chan []string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if rest, ok := strings.CutPrefix(sc.Text(), "ADDRS "); ok {
				addrs <- strings.Fields(rest)
			}
		}
		io.Copy(io.Discard, stdout)
		exited <- cmd.Wait()
	}()
	var imapAddr, smtpAddr, sock, metricsAddr string
	select {
	case a := <-addrs:
		imapAddr, smtpAddr, sock, metricsAddr = a[0], a[1], a[2], a[3]
	case err := <-exited:
		exited <- err
		t.Fatalf("the child exited before relayd started: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("relayd did not start within 2 minutes")
	}

	statusConns := flood(t, "unix", sock, "/v1/status")
	metricsConns := flood(t, "tcp", metricsAddr, "/metrics")
	t.Logf("answered on the status socket: %d of %d; on the metrics listener: %d of %d",
		answered(statusConns), floodConns, answered(metricsConns), floodConns)
	if answered(statusConns) == 0 || answered(metricsConns) == 0 {
		t.Error("no request of the flood was answered: both listeners should answer up to their caps")
	}

	if err := imapLoginAt(imapAddr); err != nil {
		t.Errorf("IMAP login during the flood = %v, want nil", err)
	}
	if err := sendAt(smtpAddr, "during the flood"); err != nil {
		t.Errorf("SMTP submission during the flood = %v, want nil", err)
	}

	// Every connection of the flood is closed by relayd: those beyond the
	// caps were at once, the others go after IdleTimeout.
	deadline := time.Now().Add(time.Minute)
	for what, conns := range map[string][]*floodConn{"status socket": statusConns, "metrics listener": metricsConns} {
		open := 0
		for _, c := range conns {
			if !c.closedBy(deadline) {
				open++
			}
		}
		if open > 0 {
			t.Errorf("%s: %d idle connections still open a minute after the flood", what, open)
		}
	}
	for _, bad := range []string{"too many open files", "level=ERROR"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("relayd logged %q", bad)
		}
	}
	if !strings.Contains(logs.String(), "closed new connections at once") {
		t.Error("relayd did not log that it closed the connections beyond its caps")
	}
}

// floodConn is one connection of the flood, left open after its request.
type floodConn struct {
	c        net.Conn
	br       *bufio.Reader
	answered bool
}

// closedBy reports whether relayd closes c before deadline.
func (f *floodConn) closedBy(deadline time.Time) bool {
	f.c.SetReadDeadline(deadline)
	_, err := io.Copy(io.Discard, f.br)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

func answered(conns []*floodConn) int {
	n := 0
	for _, c := range conns {
		if c.answered {
			n++
		}
	}
	return n
}

// flood opens floodConns connections to addr, from a few goroutines, and
// sends GET path on each; it keeps them open until the test ends.
func flood(t *testing.T, network, addr, path string) []*floodConn {
	t.Helper()
	conns := make([]*floodConn, floodConns)
	var wg sync.WaitGroup
	const workers = 50
	for w := range workers {
		wg.Go(func() {
			for i := w; i < floodConns; i += workers {
				c, err := net.DialTimeout(network, addr, 5*time.Second)
				if err != nil {
					continue
				}
				f := &floodConn{c: c, br: bufio.NewReader(c)}
				conns[i] = f
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: relayd\r\n\r\n"); err != nil {
					continue
				}
				resp, err := http.ReadResponse(f.br, nil)
				if err != nil {
					continue
				}
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				f.answered = err == nil && resp.StatusCode == http.StatusOK
			}
		})
	}
	wg.Wait()
	var opened []*floodConn
	for _, f := range conns {
		if f != nil {
			opened = append(opened, f)
			t.Cleanup(func() { f.c.Close() })
		}
	}
	return opened
}

// imapLoginAt logs in over IMAP at addr and selects INBOX, within a minute.
func imapLoginAt(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	c := imapclient.New(conn, nil)
	defer c.Close()
	if err := c.Login(user, password).Wait(); err != nil {
		return err
	}
	_, err = c.Select("INBOX", nil).Wait()
	return err
}

// sendAt submits a message over SMTP at addr, within a minute.
func sendAt(addr, body string) error {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	conn.SetDeadline(time.Now().Add(time.Minute))
	c := smtp.NewClient(conn)
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		return err
	}
	return c.SendMail(mailbox, []string{"someone@example.net"}, strings.NewReader("Subject: t\r\n\r\n"+body+"\r\n"))
}

// TestFloodedDaemon is TestIdleConnectionsLeaveDescriptorsForMail's child:
// relayd (with the fake IdP and upstreams) under an open-file limit of
// floodNoFile, with [metrics] listen, default caps and a short
// IdleTimeout. It prints its addresses and serves until stdin closes.
func TestFloodedDaemon(t *testing.T) {
	if os.Getenv("RELAYD_FLOOD_CHILD") == "" {
		t.Skip("the child process of TestIdleConnectionsLeaveDescriptorsForMail")
	}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &unix.Rlimit{Cur: floodNoFile, Max: floodNoFile}); err != nil {
		t.Fatal(err)
	}
	var socket string
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Metrics = []string{`listen = "127.0.0.1:0"`}
		// Long enough for the flood and the mail to happen while the
		// flood's connections are open.
		o.StatusLimits = status.Limits{IdleTimeout: 5 * time.Second}
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, nil)) // the parent reads it
		socket = c.StatusSocket
	})
	d := td.d
	fmt.Printf("ADDRS %s %s %s %s\n", d.IMAPAddrs()[0], d.SMTPAddrs()[0], socket, d.metricLn.Addr())
	io.Copy(io.Discard, os.Stdin)
}
