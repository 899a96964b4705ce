package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

// A reload that adds an account, removes another (its IMAP session ends
// with a BYE, its queued mail stays, held), changes a password and the log
// level keeps an IMAP session in IDLE and the queued mail; a broken file is
// refused with its key named, and the old configuration keeps serving.
func TestReload(t *testing.T) {
	e := newEnv(t)
	const salesPassword = "sales-Local-pw-1"
	e.up.AddUser("sales@example.com")
	deadAddr := deferringUpstream(t, e)
	smtpAddr := e.writeSMTPConfig(deadAddr, "1h", "2h")
	e.conf.Accounts[0].IMAPServer, e.conf.Accounts[0].Direction = e.up.Addr, "both"
	e.conf.Accounts = append(e.conf.Accounts, testkit.Account{
		Name: "sales", Provider: "custom", Email: "sales@example.com", ClientID: "client",
		ClientSecretFile: e.conf.Accounts[0].ClientSecretFile, TokenURL: e.idp.TokenURL(),
		IMAPServer: e.up.Addr, SMTPServer: deadAddr, Security: "none", LocalUser: "sales", LocalPasswordHash: hashOf(salesPassword),
	})
	e.writeConfig()
	rt := filepath.Join(e.dir, "sales.rt")
	os.WriteFile(rt, []byte(e.idp.IssueRefreshToken("client", "sales@example.com")), 0o600)
	for name, f := range map[string]string{"support": e.rtFile(), "sales": rt} {
		if out, code := e.run("authorize", "-c", e.cfg, name, "--refresh-token-file", f); code != 0 {
			t.Fatalf("authorize %s: %s", name, out)
		}
	}
	sock, msgs := notifications(t, e.dir)
	d := e.serveEnv([]string{"NOTIFY_SOCKET=" + sock})
	awaitNotify(t, msgs, "READY=1")

	// An IMAP session in IDLE for support, one for sales, and mail of sales.
	support, err := e.login(localPassword)
	if err != nil {
		t.Fatal(err)
	}
	defer support.Close()
	support.Select("INBOX", nil).Wait()
	idle, err := support.Idle()
	if err != nil {
		t.Fatal(err)
	}
	sales, err := imapclient.DialInsecure(e.imapAddr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sales.Close()
	if err := sales.Login("sales", salesPassword).Wait(); err != nil {
		t.Fatal(err)
	}
	sendMail(t, smtpAddr, "sales", salesPassword, "sales@example.com", "sales' queued mail")

	// The new configuration.
	const newPassword = "support-New-pw-2"
	e.conf.LogLevel = "debug"
	e.conf.Accounts[0].LocalPasswordHash = hashOf(newPassword)
	e.conf.Accounts[1] = testkit.Account{
		Name: "newbie", Provider: "custom", Email: "newbie@example.com", ClientID: "client",
		ClientSecretFile: e.conf.Accounts[0].ClientSecretFile, TokenURL: e.idp.TokenURL(),
		IMAPServer: e.up.Addr, Security: "none", Direction: "incoming", LocalUser: "newbie", LocalPasswordHash: hashOf("newbie-pw-3"),
	}
	e.writeConfig()
	if out, code := e.run("reload", "-c", e.cfg); code != 0 || !strings.Contains(out, "configuration reloaded") {
		t.Fatalf("reload: exit %d\n%s\n%s", code, out, d.stderr.String())
	}
	awaitNotify(t, msgs, "RELOADING=1\nMONOTONIC_USEC=")
	awaitNotify(t, msgs, "READY=1")

	if err := idle.Close(); err != nil {
		t.Fatalf("the IDLE session did not survive the reload: %v", err)
	}
	if err := idle.Wait(); err != nil {
		t.Fatalf("the IDLE session did not survive the reload: %v", err)
	}
	if err := support.Noop().Wait(); err != nil {
		t.Fatalf("NOOP after the reload: %v", err)
	}
	if err := sales.Noop().Wait(); err == nil {
		t.Error("the removed account's session is still open")
	}
	if _, err := e.login(localPassword); err == nil {
		t.Error("the old password still works after the reload")
	}
	if c, err := e.login(newPassword); err != nil {
		t.Errorf("the new password does not work: %v", err)
	} else {
		c.Close()
	}
	out, _ := e.run("queue", "-c", e.cfg, "list", "--json")
	var l []*queue.Entry
	if json.Unmarshal([]byte(out), &l) != nil || len(l) != 1 || l[0].Account != "sales" || l[0].State != queue.StateHeld {
		t.Errorf("the removed account's mail: %s\n%s", out, d.stderr.String())
	}
	d.waitLog(t, "level=DEBUG", 10*time.Second)

	// A broken file is refused and the old configuration keeps serving.
	b, _ := os.ReadFile(e.cfg)
	os.WriteFile(e.cfg, []byte(strings.Replace(string(b), `provider = "custom"`, `provider = "gmial"`, 1)), 0o600)
	out, code := e.run("reload", "-c", e.cfg)
	if code == 0 || !strings.Contains(out, `account[1].provider: unknown provider "gmial"`) {
		t.Errorf("reload of a broken file: exit %d\n%s", code, out)
	}
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.waitLog(t, "configuration not reloaded; the old one stays in force", 10*time.Second)
	if c, err := e.login(newPassword); err != nil {
		t.Errorf("after a refused reload: %v", err)
	} else {
		c.Close()
	}
	if d.cmd.ProcessState != nil {
		t.Fatal("SIGHUP ended relayd")
	}
}

// sendMail submits one message to relayd's SMTP listener.
func sendMail(t *testing.T, addr, user, pass, from, body string) {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(from, []string{"x@example.net"}, strings.NewReader("Subject: t\r\n\r\n"+body+"\r\n")); err != nil {
		t.Fatal(err)
	}
}

// deferringUpstream is an SMTP upstream that answers every message with
// 451, so that mail stays queued (a closed port could be taken by another
// test's server).
func deferringUpstream(t *testing.T, e *env) string {
	t.Helper()
	up, err := testkit.NewSMTPUpstream(e.idp, testkit.SMTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	up.FailData(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try again later"})
	return up.Addr
}
