package daemon

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/testkit"
)

// An account with transport = "graph": mail submitted over SMTP goes
// through the queue to Graph, its IMAP side works with its own token, a
// message too large for Graph is refused at the end of DATA with 552
// 5.3.4, and status and metrics name the transport.
func TestGraphAccountEndToEnd(t *testing.T) {
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Accounts[0].Transport = "graph"
		c.Accounts[0].SMTPServer = ""
	})
	g := td.graph
	if err := td.imapLogin(); err != nil {
		t.Fatalf("IMAP on a Graph account: %v", err)
	}
	if err := td.send("ann@example.net", "via graph"); err != nil {
		t.Fatal(err)
	}
	sent := g.WaitSent(t, 1, 15*time.Second)
	if !bytes.Contains(sent[0].MIME, []byte("via graph")) || sent[0].Recipients[0] != "ann@example.net" || sent[0].Mailbox != mailbox {
		t.Errorf("Graph got %+v", sent[0])
	}
	if n := len(td.smtpUp.Messages()); n != 0 {
		t.Errorf("%d messages went over SMTP", n)
	}

	// Over Graph's cap: refused at the end of DATA, nothing queued.
	c, err := smtp.Dial(td.d.SMTPAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		t.Fatal(err)
	}
	big := "Subject: big\r\n\r\n" + strings.Repeat(strings.Repeat("z", 998)+"\r\n", config.GraphMaxMessage/1000+10)
	err = c.SendMail(mailbox, []string{"ann@example.net"}, strings.NewReader(big))
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 552 || se.EnhancedCode != (smtp.EnhancedCode{5, 3, 4}) || !strings.Contains(se.Message, "too large") {
		t.Fatalf("oversized message over a Graph account = %v, want 552 5.3.4", err)
	}
	if err := c.Noop(); err != nil {
		t.Errorf("session after 552: %v", err)
	}
	if st := td.d.Status(); st.Accounts[0].Transport != "graph" || st.Accounts[0].Queue.Queued != 0 {
		t.Errorf("status: transport %q, queue %+v", st.Accounts[0].Transport, st.Accounts[0].Queue)
	}
	if m := td.scrape(); !strings.Contains(m, `relayd_account_info{account="support",direction="both",provider="custom",transport="graph"} 1`) {
		t.Errorf("metrics lack the transport:\n%s", m)
	}
	if n := len(g.Sent()); n != 1 {
		t.Errorf("Graph got %d messages, want 1 (the oversized one refused)", n)
	}
}
