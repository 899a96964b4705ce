package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
)

// The README's relayd-notify, run by a real relayd as on_state_change, mails
// the admin through relayd's own SMTP listener with another account when a
// mailbox's grant dies.
func TestNotifyExample(t *testing.T) {
	realserver.RequireBinary(t, "curl", "curl")
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, block, ok := strings.Cut(string(readme), "<!-- relayd-notify: tested by TestNotifyExample -->\n```sh\n")
	script, _, ok2 := strings.Cut(block, "```")
	if !ok || !ok2 {
		t.Fatal("the README has no relayd-notify example")
	}
	e := newEnv(t)
	hook := filepath.Join(e.dir, "relayd-notify")
	os.WriteFile(hook, []byte(script), 0o755)
	up, err := testkit.NewSMTPUpstream(e.idp, testkit.SMTPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	smtpAddr, _ := realserver.FreeAddr()
	const alertsPassword = "alerts-Local-pw-4R"
	netrc := filepath.Join(e.dir, "alerts.netrc")
	os.WriteFile(netrc, []byte("machine 127.0.0.1 login alerts password "+alertsPassword+"\n"), 0o600)
	e.secrets = append(e.secrets, alertsPassword)
	e.conf.SMTPListen = []string{smtpAddr}
	e.conf.Health = []string{fmt.Sprintf("on_state_change = [%q, %q, %q, %q, %q]", hook, "smtp://"+smtpAddr, netrc, "alerts@example.com", "admin@example.com")}
	e.conf.Accounts = append(e.conf.Accounts, testkit.Account{
		Name: "alerts", Provider: "custom", Email: "alerts@example.com", ClientID: "client",
		ClientSecretFile: e.conf.Accounts[0].ClientSecretFile, TokenURL: e.idp.TokenURL(),
		SMTPServer: up.Addr, Security: "none", Direction: "outgoing", LocalUser: "alerts", LocalPasswordHash: hashOf(alertsPassword),
	})
	e.writeConfig()
	rt := filepath.Join(e.dir, "alerts.rt")
	os.WriteFile(rt, []byte(e.idp.IssueRefreshToken("client", "alerts@example.com")), 0o600)
	for name, f := range map[string]string{"support": e.rtFile(), "alerts": rt} {
		if out, code := e.run("authorize", "-c", e.cfg, name, "--refresh-token-file", f); code != 0 {
			t.Fatalf("authorize %s: %s", name, out)
		}
	}
	d := e.serve()
	e.idp.Revoke(mbox)
	e.idp.ExpireAccessTokens()
	if _, err := e.login(localPassword); err == nil {
		t.Fatal("login with a revoked grant worked")
	}
	got := up.WaitMessages(t, 1, 30*time.Second)
	body := string(got[0].Data)
	if got[0].To[0] != "admin@example.com" || !strings.Contains(body, "Subject: relayd: mailbox support is needs_reauth") ||
		!strings.Contains(body, "support ("+mbox+"): ok -> needs_reauth") || !strings.Contains(body, "relayd authorize support") {
		t.Errorf("the admin got %q\n%s", body, d.stderr.String())
	}
	e.record("relayd serve stderr (notify)", []byte(d.stderr.String()))
	e.sweepSecrets()
}

func hashOf(pw string) string {
	h, _ := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	return string(h)
}
