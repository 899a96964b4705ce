package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// swaks submits through a real relayd to a real Postfix (Dovecot SASL
// checking XOAUTH2 at the fake IdP), which relays to smtp-sink. A revoked
// grant holds the mail; relayd authorize drains it.
func TestPostfixUpstream(t *testing.T) {
	swaks := testkit.RequireBinary(t, "swaks", "swaks")
	e := newEnv(t)
	const staticPassword = "postfix-static-Pw"
	dove := testkit.StartDovecot(t, e.idp, testkit.DovecotOptions{Password: staticPassword})
	pf := testkit.StartPostfix(t, dove)
	smtpAddr := e.writeSMTPConfig(pf.SubmissionAddr, "100ms", "1s")
	// A second account with provider "password": AUTH PLAIN upstream.
	pwFile := filepath.Join(e.dir, "scanner.password")
	os.WriteFile(pwFile, []byte(staticPassword+"\n"), 0o600)
	f, _ := os.OpenFile(e.cfg, os.O_APPEND|os.O_WRONLY, 0)
	fmt.Fprintf(f, `
[[account]]
name = "scanner"
provider = "password"
email = "scanner@example.com"
password_file = %q
smtp_server = %q
smtp_security = "none"
direction = "outgoing"
local_user = "scanner"
local_password_hash = %q
`, pwFile, pf.SubmissionAddr, localHash())
	f.Close()
	e.secrets = append(e.secrets, staticPassword)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	e.serve()
	host, port, _ := strings.Cut(smtpAddr, ":")
	var sendAs func(user, from, body string) string
	send := func(body string) string {
		return sendAs("helpdesk", mbox, body)
	}
	sendAs = func(user, from, body string) string {
		out, err := exec.Command(swaks, "--server", host, "--port", port, "--auth", "PLAIN",
			"--auth-user", user, "--auth-password", localPassword, "--from", from, "--to", "customer@example.net",
			"--header", "Subject: via postfix", "--body", body).CombinedOutput()
		e.record("swaks", out)
		if err != nil || !strings.Contains(string(out), "250 2.0.0 queued as") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
		return string(out)
	}
	send("first message through Postfix")
	if !pf.WaitSunk([]byte("first message through Postfix"), 30*time.Second) {
		t.Fatalf("message did not reach smtp-sink\npostfix log:\n%s\ndovecot log:\n%s", pf.Log(), dove.Log())
	}

	// Revoked grant: Postfix answers 535 5.7.8; mail is held, not bounced.
	e.idp.Revoke(mbox)
	send("second message, held while the grant is dead")
	var st string
	for i := 0; i < 100; i++ {
		st, _ = e.run("status", "--socket", e.socket)
		if strings.Contains(st, "needs_reauth") {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !strings.Contains(st, "1 of 2 mailboxes needs reauthorization: support") || !strings.Contains(st, "outgoing mail held") {
		t.Fatalf("status while held:\n%s\npostfix log:\n%s", st, pf.Log())
	}
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	if !pf.WaitSunk([]byte("second message, held while the grant is dead"), 30*time.Second) {
		t.Fatalf("held message not delivered after authorize\npostfix log:\n%s", pf.Log())
	}
	if strings.Contains(string(pf.Sunk()), "Undelivered Mail") {
		t.Error("a bounce was sent")
	}

	// Provider "password" logs in with PLAIN and the file's password.
	sendAs("scanner", "scanner@example.com", "scanned document via a password account")
	if !pf.WaitSunk([]byte("scanned document via a password account"), 30*time.Second) {
		t.Fatalf("password-account message not delivered\npostfix log:\n%s", pf.Log())
	}
	if !strings.Contains(pf.Log(), "sasl_method=PLAIN, sasl_username=scanner@example.com") {
		t.Errorf("Postfix did not see a PLAIN login for the password account:\n%s", pf.Log())
	}
}
