package main

import (
	"bytes"
	"io"
	"net"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/realserver"
)

// The upstream SMTP server cannot be reached (its port is closed, as in a
// network outage): relayd accepts the mail, relayd status turns WARNING
// naming the mailbox and why, nothing is held or bounced; when the server
// is reachable again the mail goes out once and status is OK again.
// Upstream: a real Postfix behind a TCP relay that is down, then up.
func TestPostfixUnreachableThenBack(t *testing.T) {
	swaks := realserver.RequireBinary(t, "swaks", "swaks")
	e := newEnv(t)
	dove := realserver.StartDovecot(t, e.idp, realserver.DovecotOptions{})
	pf := realserver.StartPostfix(t, dove)
	gateway, err := realserver.FreeAddr() // nothing listens here yet
	if err != nil {
		t.Fatal(err)
	}
	smtpAddr := e.writeSMTPConfig(gateway, "100ms", "1s")
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	d := e.serve()
	host, port, _ := strings.Cut(smtpAddr, ":")
	out, err := exec.Command(swaks, "--server", host, "--port", port, "--auth", "PLAIN",
		"--auth-user", "helpdesk", "--auth-password", localPassword, "--from", mbox, "--to", "customer@example.net",
		"--header", "Subject: outage", "--body", "sent during the outage").CombinedOutput()
	e.record("swaks", out)
	if err != nil || !strings.Contains(string(out), "250 2.0.0 queued as") {
		t.Fatalf("swaks during the outage: %v\n%s", err, out)
	}
	d.waitLog(t, "upstream unreachable; mail stays queued", 30*time.Second)
	st, code := e.run("status", "--socket", e.socket)
	if code != nagiosWarning || !strings.Contains(st, "degraded (retrying): support") ||
		!strings.Contains(st, gateway) || strings.Contains(st, "outgoing mail held") {
		t.Fatalf("status during the outage: exit %d\n%s\nwant WARNING (1) naming support and %s, nothing held", code, st, gateway)
	}
	js, _ := e.run("status", "--socket", e.socket, "--json")
	if !strings.Contains(js, `"reason": "smtp_unreachable"`) {
		t.Errorf("status --json during the outage lacks reason smtp_unreachable:\n%s", js)
	}

	// The way to Postfix opens again.
	stop := relay(t, gateway, pf.SubmissionAddr)
	defer stop()
	if !pf.WaitSunk([]byte("sent during the outage"), time.Minute) {
		t.Fatalf("message not delivered once the upstream was back\npostfix log:\n%s\nrelayd log:\n%s", pf.Log(), d.stderr.String())
	}
	if st, code := e.run("status", "--socket", e.socket); code != nagiosOK || !strings.Contains(st, "all 1 mailbox ok") {
		t.Errorf("status after the outage: exit %d\n%s\nwant OK", code, st)
	}
	if n := bytes.Count(pf.Sunk(), []byte("sent during the outage")); n != 1 {
		t.Errorf("the message reached the sink %d times, want once", n)
	}
	if strings.Contains(string(pf.Sunk()), "Undelivered Mail") {
		t.Error("a bounce was sent")
	}
}

// relay accepts connections on addr and joins each to target, until stop.
func relay(t *testing.T, addr, target string) (stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			wg.Add(2)
			go func() { defer wg.Done(); io.Copy(u, c); u.(*net.TCPConn).CloseWrite() }()
			go func() { defer wg.Done(); io.Copy(c, u); c.Close() }()
		}
	}()
	return func() { ln.Close(); wg.Wait() }
}
