package queue_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	. "github.com/relayd/relayd/queue"
)

// Against a real Postfix (Dovecot SASL): account support (XOAUTH2) is
// revoked; after fallback_after its mail goes through account backup, a
// password account on the same Postfix, and arrives rewritten: From
// backup's mailbox with the sender's name, Reply-To the sender, MAIL FROM
// backup, the body as sent.
func TestFallbackPostfix(t *testing.T) {
	f := &fallbackEnv{t: t, b: relaytest.New(t), now: time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC), events: make(chan Event, 1000)}
	dove := realserver.StartDovecot(t, f.b.IdP, realserver.DovecotOptions{})
	pf := realserver.StartPostfix(t, dove)
	f.a = f.b.Account(testkit.Account{Direction: "outgoing", SMTPServer: pf.SubmissionAddr, Security: "none"},
		relaytest.AccountOptions{Now: f.clock, Edit: func(c *config.Account) {
			c.FallbackAccount, c.FallbackAfter, c.FallbackFrom = "backup", 15*time.Minute, config.FallbackRewrite
		}})
	f.fb = f.b.Account(testkit.Account{Name: "backup", Provider: "password", Email: backupBox, Direction: "outgoing",
		SMTPServer: pf.SubmissionAddr, Security: "none"}, relaytest.AccountOptions{Password: dove.Password})
	f.reg = relaytest.Registry(f.a, f.fb)
	f.q = f.b.Queue(f.reg, f.opts(f.clock))

	f.b.IdP.Revoke(relaytest.Mailbox)
	msg := strings.Replace(ticket, "Subject: ticket 42", "Subject: via the fallback on Postfix", 1)
	id := f.submit(f.q, msg, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(15 * time.Minute)
	f.q.Flush("support")
	f.await("delivery through the fallback", func(e Event) bool { return e.Kind == EventDelivered && e.ID == id && e.Via == "backup" })
	if !pf.WaitSunk([]byte("via the fallback on Postfix"), 30*time.Second) {
		t.Fatalf("the message did not reach the sink\npostfix log:\n%s\ndovecot log:\n%s", pf.Log(), dove.Log())
	}
	sunk := bytes.ReplaceAll(pf.Sunk(), []byte("\r\n"), []byte("\n")) // the sink writes lines with LF
	for _, want := range []string{
		"X-Mail-Args: <backup@example.com>",
		"\nFrom: \"Support Desk\" <backup@example.com>\nReply-To: Support Desk <support@example.com>\nTo: customer@example.net\n",
		"\n\n" + strings.ReplaceAll(ticketBody, "\r\n", "\n"),
	} {
		if !bytes.Contains(sunk, []byte(want)) {
			t.Errorf("the message Postfix relayed lacks %q:\n%s", want, sunk)
		}
	}
	if bytes.Contains(sunk, []byte("From: Support Desk <support@example.com>")) {
		t.Errorf("the sender's From went out unchanged:\n%s", sunk)
	}
	log := pf.Log()
	if !strings.Contains(log, "sasl_method=PLAIN, sasl_username=backup@example.com") ||
		!regexp.MustCompile(`from=<backup@example\.com>`).MatchString(log) {
		t.Errorf("Postfix did not see backup log in with PLAIN and send with MAIL FROM backup:\n%s", log)
	}
	if st := f.q.Stats("support"); st.SentViaFallback != 1 || st.Fallback == nil || !st.Fallback.Active {
		t.Errorf("stats = %+v, fallback %+v", st, st.Fallback)
	}
}
