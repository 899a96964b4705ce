package daemon

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

// The whole daemon: account support's grant is revoked; with
// fallback_account = "backup" its mail goes out through backup's mailbox
// with From rewritten and Reply-To the sender, support stays
// needs_reauth, and status and metrics count it.
func TestFallbackThroughTheDaemon(t *testing.T) {
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		backup := c.Accounts[0]
		backup.Name, backup.Email, backup.LocalUser = "backup", "backup@example.com", "backup-user"
		backup.Direction = "outgoing"
		c.Accounts[0].FallbackAccount, c.Accounts[0].FallbackAfter = "backup", "0s"
		c.Accounts = append(c.Accounts, backup)
	})
	g := &auth.Grant{RefreshToken: td.idp.IssueRefreshToken("client", "backup@example.com"), GrantedAt: time.Now()}
	if err := td.d.InstallGrant("backup", g); err != nil {
		t.Fatal(err)
	}
	td.idp.Revoke(mailbox)
	if err := td.send("ann@example.net", "through the fallback"); err != nil {
		t.Fatal(err)
	}
	m := td.smtpUp.WaitMessages(t, 1, 15*time.Second)[0]
	if m.From != "backup@example.com" || !bytes.Contains(m.Data, []byte("\r\nReply-To: <"+mailbox+">\r\n")) ||
		!bytes.Contains(m.Data, []byte("\r\nFrom: <backup@example.com>\r\n")) {
		t.Errorf("sent as MAIL FROM %s:\n%s", m.From, m.Data)
	}
	td.waitEvent(queue.EventDelivered) // recorded, not only received
	st := td.d.Status()
	a := st.Accounts[0]
	if a.Name != "support" || a.State != "needs_reauth" || a.Queue == nil || a.Queue.SentViaFallback != 1 {
		t.Errorf("support after the fallback: state %s, queue %+v", a.State, a.Queue)
	}
	if !strings.Contains(td.scrape(), `relayd_sent_via_fallback_total{account="support"} 1`) {
		t.Error("metrics do not count the fallback send")
	}
}
