package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// submitOne sends one message through relayd's SMTP listener and returns
// its queue ID.
func (e *env) submitOne(smtpAddr string) string {
	e.t.Helper()
	c, err := smtp.Dial(smtpAddr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "helpdesk", localPassword)); err != nil {
		e.t.Fatalf("AUTH = %v", err)
	}
	if err := c.SendMail(mbox, []string{"someone@example.net"}, strings.NewReader("Subject: held\r\n\r\nheld mail\r\n")); err != nil {
		e.t.Fatalf("SendMail = %v", err)
	}
	out, _ := e.run("queue", "-c", e.cfg, "list", "--json")
	var l []struct{ ID string }
	if json.Unmarshal([]byte(out), &l) != nil || len(l) != 1 {
		e.t.Fatalf("queue list --json: %s", out)
	}
	return l[0].ID
}

// The admin commands on a held account (never authorized: no_grant) say
// that it is held, why, and what releases it, and list and show agree
// that its message is held, in text and JSON.
func TestQueueCommandsOnHeldAccount(t *testing.T) {
	e := newEnv(t)
	smtpAddr := e.writeSMTPConfig("127.0.0.1:9", "50ms", "200ms")
	d := e.serve()
	id := e.submitOne(smtpAddr)
	d.waitLog(t, "holding the account's outgoing mail", 10*time.Second)

	out, code := e.run("queue", "-c", e.cfg, "list")
	if code != 0 || !regexp.MustCompile(regexp.QuoteMeta(id)+`\s+support\s+held`).MatchString(out) {
		t.Errorf("queue list: exit %d\n%s", code, out)
	}
	out, _ = e.run("queue", "-c", e.cfg, "list", "--json")
	if !strings.Contains(out, `"state":"held"`) {
		t.Errorf("queue list --json:\n%s", out)
	}
	out, code = e.run("queue", "-c", e.cfg, "show", id)
	if code != 0 || !strings.Contains(out, `"state": "held"`) {
		t.Errorf("queue show: exit %d, want the state list shows (held)\n%s", code, out)
	}

	held := `account "support": its outgoing mail is held (needs_reauth, no_grant)`
	release := "Released by: relayd authorize support"
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"flush", "support"}, []string{"0 message(s) due now; held mail stays held (flush lifts no hold)", held, release}},
		{[]string{"flush"}, []string{"0 message(s) due now; held mail stays held", held, release}},
		{[]string{"retry", id}, []string{id + ": due again, but held: it goes out once released", held, release}},
		{[]string{"release", "support"}, []string{"support: released, but its mail is still held:", held, release}},
	} {
		out, code := e.run(append([]string{"queue", "-c", e.cfg}, tc.args...)...)
		if code != 0 {
			t.Errorf("queue %s: exit %d\n%s", tc.args, code, out)
		}
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("queue %s does not say %q:\n%s", tc.args, w, out)
			}
		}
		for _, lie := range []string{"queued for delivery now", "1 message(s) due now"} {
			if strings.Contains(out, lie) {
				t.Errorf("queue %s says %q of held mail:\n%s", tc.args, lie, out)
			}
		}
	}
	// status counts it as not authorized yet, not as needing
	// reauthorization, and says what to do once.
	out, code = e.run("status", "--socket", e.socket)
	if code != 2 || !strings.Contains(out, "1 of 1 mailbox not authorized yet: support") || strings.Contains(out, "reauthorization") ||
		strings.Contains(out, "last error") {
		t.Errorf("status of a never-authorized account: exit %d\n%s", code, out)
	}
	// An admin's hold of the message is named with its own release.
	e.run("queue", "-c", e.cfg, "hold", id)
	out, _ = e.run("queue", "-c", e.cfg, "retry", id)
	if !strings.Contains(out, id+` (account "support") is held (needs_reauth, admin_hold)`) || !strings.Contains(out, "Released by: relayd queue release "+id) {
		t.Errorf("queue retry of a message an admin held:\n%s", out)
	}
}
