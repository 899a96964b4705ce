package main

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/queue"
)

// rawSMTP is a downstream SMTP client driven line by line.
type rawSMTP struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialSMTP(t *testing.T, addr string) *rawSMTP {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	r := &rawSMTP{t: t, c: c, br: bufio.NewReader(c)}
	r.expect("220")
	r.cmd("EHLO test", "250 ")
	r.cmd("AUTH PLAIN "+plainIR("helpdesk", localPassword), "235")
	return r
}

func plainIR(user, pass string) string {
	return base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
}

// expect reads reply lines until one starts with code (a final line) and
// returns it.
func (r *rawSMTP) expect(code string) string {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		line, err := r.br.ReadString('\n')
		if err != nil {
			r.t.Fatalf("waiting for %s: %v", code, err)
		}
		if strings.HasPrefix(line, code) && (len(line) < 4 || line[3] == ' ' || strings.HasSuffix(code, " ")) {
			return line
		}
		if len(line) > 3 && line[3] == '-' {
			continue
		}
		if !strings.HasPrefix(line, code[:3]) {
			r.t.Fatalf("want %s, got %q", code, line)
		}
	}
}

func (r *rawSMTP) cmd(line, code string) string {
	r.t.Helper()
	fmt.Fprintf(r.c, "%s\r\n", line)
	return r.expect(code)
}

// A SIGTERM with clients in every state: between SMTP commands (421), in
// the middle of DATA (finishes, gets its 250, then 421), an IMAP client not
// logged in (BYE) and one in IDLE; every message that got its 250 is on
// disk after the exit, which comes within the grace period plus a margin.
func TestShutdownWithClientsInEveryState(t *testing.T) {
	e := newEnv(t)
	smtpAddr := e.writeSMTPConfig(deferringUpstream(t, e), "1h", "2h")
	e.conf.Accounts[0].IMAPServer, e.conf.Accounts[0].Direction = e.up.Addr, "both"
	e.writeConfig()
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	d := e.serveEnv(nil) // serve -grace 2s

	queued := dialSMTP(t, smtpAddr)
	queued.cmd("MAIL FROM:<"+mbox+">", "250")
	queued.cmd("RCPT TO:<a@example.net>", "250")
	queued.cmd("DATA", "354")
	fmt.Fprintf(queued.c, "Subject: before\r\n\r\nqueued before the shutdown\r\n.\r\n")
	queued.expect("250")

	idle := dialSMTP(t, smtpAddr)
	inData := dialSMTP(t, smtpAddr)
	inData.cmd("MAIL FROM:<"+mbox+">", "250")
	inData.cmd("RCPT TO:<b@example.net>", "250")
	inData.cmd("DATA", "354")
	fmt.Fprintf(inData.c, "Subject: during\r\n\r\nfirst half, ")

	preauth, err := net.Dial("tcp", e.imapAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer preauth.Close()
	pr := bufio.NewReader(preauth)
	pr.ReadString('\n')
	c, err := e.login(localPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Select("INBOX", nil).Wait()
	idleCmd, err := c.Idle()
	if err != nil {
		t.Fatal(err)
	}
	_ = idleCmd

	start := time.Now()
	d.cmd.Process.Signal(syscall.SIGTERM)
	if got := idle.expect("421"); !strings.Contains(got, "4.3.2") {
		t.Errorf("idle SMTP client got %q, want 421 4.3.2", got)
	}
	fmt.Fprintf(inData.c, "second half\r\n.\r\n")
	inData.expect("250")
	inData.expect("421")
	preauth.SetReadDeadline(time.Now().Add(10 * time.Second))
	if line, _ := pr.ReadString('\n'); !strings.HasPrefix(line, "* BYE") {
		t.Errorf("IMAP client before login got %q, want BYE", line)
	}
	select {
	case <-d.exited:
	case <-time.After(2*time.Second + 15*time.Second):
		t.Fatalf("relayd did not exit within its grace period plus a margin\n%s", d.stderr.String())
	}
	if took := time.Since(start); took > 2*time.Second+10*time.Second {
		t.Errorf("shutdown took %s", took)
	}
	log := d.stderr.String()
	if !strings.Contains(log, "shutting down") || !strings.Contains(log, "relayd stopped") {
		t.Errorf("begin and end of the shutdown not logged:\n%s", log)
	}
	out, code := e.run("queue", "-c", e.cfg, "list", "--json")
	var l []*queue.Entry
	if code != 0 || json.Unmarshal([]byte(out), &l) != nil || len(l) != 2 {
		t.Fatalf("after the exit the queue holds %d messages (exit %d), want both that got 250:\n%s", len(l), code, out)
	}
}
