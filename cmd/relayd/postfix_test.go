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

	"github.com/relayd/relayd/internal/realserver"
)

// swaks submits through a real relayd to a real Postfix (Dovecot SASL
// checking XOAUTH2 at the fake IdP), which relays to smtp-sink. A revoked
// grant holds the mail; relayd authorize drains it.
func TestPostfixUpstream(t *testing.T) {
	swaks := realserver.RequireBinary(t, "swaks", "swaks")
	e := newEnv(t)
	const staticPassword = "postfix-static-Pw"
	dove := realserver.StartDovecot(t, e.idp, realserver.DovecotOptions{Password: staticPassword})
	pf := realserver.StartPostfix(t, dove)
	smtpAddr := e.writeSMTPConfig(pf.SubmissionAddr, "100ms", "1s")
	// A second account with provider "password": AUTH PLAIN upstream.
	pwFile := filepath.Join(e.dir, "scanner.password")
	os.WriteFile(pwFile, []byte(staticPassword+"\n"), 0o600)
	e.conf.Accounts = append(e.conf.Accounts, testkit.Account{
		Name: "scanner", Provider: "password", Email: "scanner@example.com", PasswordFile: pwFile,
		SMTPServer: pf.SubmissionAddr, Security: "none", Direction: "outgoing",
		LocalUser: "scanner", LocalPasswordHash: localHash(),
	})
	e.writeConfig()
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

// The IdP revokes the grant and its access tokens while relayd holds a
// cached access token (Google does so at once; Microsoft on a password
// change). Mail submitted then is held; a grant handed over by relayd
// authorize must drain it at once, not at the next retry: the first retry
// is ten minutes away, so a pass cannot come from the schedule.
func TestPostfixRevokedTokenDrainsOnHandover(t *testing.T) {
	swaks := realserver.RequireBinary(t, "swaks", "swaks")
	e := interactiveEnv(t, "")
	dove := realserver.StartDovecot(t, e.idp, realserver.DovecotOptions{})
	pf := realserver.StartPostfix(t, dove)
	smtpAddr := e.writeSMTPConfig(pf.SubmissionAddr, "10m", "30m")
	// The mailbox is read through Dovecot too, as a helpdesk does.
	e.conf.Accounts[0].IMAPServer, e.conf.Accounts[0].Direction = dove.IMAPAddr, "both"
	e.writeConfig()
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	d := e.serve()
	host, port, _ := strings.Cut(smtpAddr, ":")
	send := func(body string) {
		t.Helper()
		out, err := exec.Command(swaks, "--server", host, "--port", port, "--auth", "PLAIN",
			"--auth-user", "helpdesk", "--auth-password", localPassword, "--from", mbox, "--to", "customer@example.net",
			"--header", "Subject: revocation", "--body", body).CombinedOutput()
		e.record("swaks", out)
		if err != nil || !strings.Contains(string(out), "250 2.0.0 queued as") {
			t.Fatalf("swaks: %v\n%s", err, out)
		}
	}
	send("before the revocation")
	if !pf.WaitSunk([]byte("before the revocation"), 30*time.Second) {
		t.Fatalf("first message not delivered\n%s\n%s", pf.Log(), d.stderr.String())
	}

	e.idp.Revoke(mbox) // the grant and the access token relayd has cached
	if _, err := e.login(localPassword); err == nil || !strings.Contains(err.Error(), "needs reauthorization") {
		t.Fatalf("IMAP login after the revocation = %v, want needs reauthorization", err)
	}
	const n = 20
	for i := range n {
		send(fmt.Sprintf("held message %02d", i))
	}
	d.waitLog(t, "holding the account's outgoing mail", 30*time.Second)
	// The admin signs in again with a device code while the daemon runs.
	r := e.startAuthorize("--device")
	e.idp.ApproveDevice(r.waitLine(userCodeRe)[1], mbox)
	if out, code := r.wait(); code != 0 || !strings.Contains(out, "the running daemon checked the grant and uses it now") {
		t.Fatalf("authorize: exit %d\n%s", code, out)
	}
	for i := range n {
		if !pf.WaitSunk(fmt.Appendf(nil, "held message %02d", i), time.Minute) {
			t.Fatalf("held message %02d not delivered after the handover\npostfix log:\n%s\nrelayd log:\n%s", i, pf.Log(), d.stderr.String())
		}
	}

	// Only the access tokens die (continuous access evaluation): the
	// refresh works, and the message goes out on a fresh connection at
	// once rather than after a retry interval.
	e.idp.RevokeAccessTokens(mbox)
	send("after the access token was revoked")
	if !pf.WaitSunk([]byte("after the access token was revoked"), time.Minute) {
		t.Fatalf("message not delivered after a refused access token\npostfix log:\n%s\nrelayd log:\n%s", pf.Log(), d.stderr.String())
	}
	log := d.stderr.String()
	if strings.Contains(log, "unreachable") || strings.Contains(log, "delivery deferred") {
		t.Errorf("a refused token was taken for an outage or deferred a message:\n%s", log)
	}
	if strings.Contains(pf.Log(), "non-SMTP command") {
		t.Errorf("relayd sent Postfix a stray command after a refused AUTH:\n%s", pf.Log())
	}
	if strings.Contains(string(pf.Sunk()), "Undelivered Mail") {
		t.Error("a bounce was sent")
	}
}
