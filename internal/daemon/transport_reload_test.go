package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

// 535 5.7.139 holds the mail; its advice says: set transport = "graph"
// and reload. The held mail then goes through Graph: the SMTP condition no
// longer holds it.
func TestSwitchToGraphByReloadSendsHeldMail(t *testing.T) {
	var tc *testkit.Config
	cfgPath := filepath.Join(t.TempDir(), "relayd.toml")
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		o.ConfigPath = cfgPath
		tc = c
	})
	// fix listen addresses for the reload
	tc.IMAPListen, tc.SMTPListen = []string{td.d.IMAPAddrs()[0]}, []string{td.d.SMTPAddrs()[0]}
	td.smtpUp.FailAuth(testkit.ErrSMTPAuthDisabled)
	if err := td.send("ann@example.net", "held by 5.7.139"); err != nil {
		t.Fatal(err)
	}
	td.waitEvent(queue.EventHeld)
	tc.Accounts[0].Transport, tc.Accounts[0].GraphURL, tc.Accounts[0].SMTPServer = "graph", td.graph.URL, ""
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatal(err)
	}
	sent := td.graph.WaitSent(t, 1, 15*time.Second)
	if !strings.Contains(string(sent[0].MIME), "held by 5.7.139") {
		t.Errorf("Graph got:\n%s", sent[0].MIME)
	}
	td.waitEvent(queue.EventDelivered)
	if st := td.d.Status(); st.Accounts[0].State != "ok" || st.Accounts[0].Transport != "graph" {
		t.Errorf("after the switch: state %s, transport %s", st.Accounts[0].State, st.Accounts[0].Transport)
	}
}
