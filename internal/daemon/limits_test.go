package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayd/relayd/internal/testkit"
)

// greeting returns addr's greeting; the connection stays open until the
// test ends.
func greeting(t *testing.T, addr string) string {
	t.Helper()
	_, g := testkit.Greeting(t, addr)
	return g
}

// The [imap] and [smtp] session limits of the file reach the listeners,
// refusals are counted in the metrics, and a reload changes the limits
// without touching open sessions.
func TestSessionLimitsFromConfig(t *testing.T) {
	var tc *testkit.Config
	cfgPath := filepath.Join(t.TempDir(), "relayd.toml")
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.IMAP = []string{"max_sessions = 1"}
		c.SMTP = []string{"max_sessions = 1", `timeout = "7m"`}
		o.ConfigPath = cfgPath
		tc = c
	})
	imapAddr, smtpAddr := td.d.IMAPAddrs()[0], td.d.SMTPAddrs()[0]
	if g := greeting(t, imapAddr); !strings.HasPrefix(g, "* OK ") {
		t.Fatalf("first IMAP greeting = %q", g)
	}
	if g := greeting(t, imapAddr); !strings.HasPrefix(g, "* BYE [UNAVAILABLE] too many connections") {
		t.Fatalf("second IMAP greeting = %q, want BYE", g)
	}
	if g := greeting(t, smtpAddr); !strings.HasPrefix(g, "220 ") {
		t.Fatalf("first SMTP greeting = %q", g)
	}
	if g := greeting(t, smtpAddr); !strings.HasPrefix(g, "421 4.7.0 ") {
		t.Fatalf("second SMTP greeting = %q, want 421 4.7.0", g)
	}
	m := td.scrape()
	for _, series := range []string{
		`relayd_sessions_refused_total{limit="sessions",protocol="imap"}`,
		`relayd_sessions_refused_total{limit="sessions",protocol="smtp"}`,
	} {
		if v := metricValue(m, series); v != 1 {
			t.Errorf("%s = %v, want 1", series, v)
		}
	}

	// The listeners' addresses are fixed for the reload.
	tc.IMAPListen, tc.SMTPListen = []string{imapAddr}, []string{smtpAddr}
	tc.IMAP = []string{"max_sessions = 2"}
	tc.SMTP = nil
	if err := os.WriteFile(cfgPath, []byte(tc.TOML()), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := td.d.Reload(); err != nil {
		t.Fatal(err)
	}
	if g := greeting(t, imapAddr); !strings.HasPrefix(g, "* OK ") {
		t.Errorf("IMAP greeting after raising the limit = %q", g)
	}
	if g := greeting(t, smtpAddr); !strings.HasPrefix(g, "220 ") {
		t.Errorf("SMTP greeting after lifting the limit to its default = %q", g)
	}
}
