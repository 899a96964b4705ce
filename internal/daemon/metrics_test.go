package daemon

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

// scrape reads GET /metrics from the status socket.
func (td *testDaemon) scrape() string {
	td.t.Helper()
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", td.d.config().StatusSocket)
	}}}
	resp, err := c.Get("http://relayd/metrics")
	if err != nil {
		td.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue finds a sample by name and labels (as Prometheus prints
// them, sorted), or -1.
func metricValue(text, series string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindStringSubmatch(text)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// After known traffic the metrics have the right names, labels and values.
func TestMetrics(t *testing.T) {
	td := startDaemon(t)
	if err := td.imapLogin(); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", td.d.IMAPAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(c, "a LOGIN "+user+" wrong-password\r\n")
	buf := make([]byte, 512)
	for !strings.Contains(string(buf), "a NO") {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		buf = append(buf[:0:0], buf[:n]...)
	}
	c.Close()
	if err := td.send("x@example.net", "counted"); err != nil {
		t.Fatal(err)
	}
	td.waitEvent(queue.EventDelivered)
	td.idp.Revoke(mailbox)
	td.idp.ExpireAccessTokens()
	td.send("y@example.net", "held")
	td.waitEvent(queue.EventHeld)

	m := td.scrape()
	for series, want := range map[string]float64{
		`relayd_logins_total{account="support",outcome="ok",protocol="imap"}`:                               1,
		`relayd_logins_total{account="",outcome="bad_credentials",protocol="imap"}`:                         1,
		`relayd_logins_total{account="support",outcome="ok",protocol="smtp"}`:                               2,
		`relayd_deliveries_total{account="support",outcome="delivered"}`:                                    1,
		`relayd_account_state{account="support",state="needs_reauth"}`:                                      1,
		`relayd_account_state{account="support",state="ok"}`:                                                0,
		`relayd_queue_messages{account="support",state="held"}`:                                             1,
		`relayd_queue_messages{account="support",state="failed"}`:                                           0,
		`relayd_upstream_auth_failures_total{account="support",reason="grant_expired_idle",source="token"}`: 1,
		`relayd_sessions_open{account="support",protocol="imap"}`:                                           0,
		// needs_reauth: the warm connections are drained and none dialed.
		`relayd_warm_connections{account="support",protocol="imap",state="ready"}`:  0,
		`relayd_warm_connections{account="support",protocol="imap",state="target"}`: 0,
		`relayd_up`: 1,
	} {
		if got := metricValue(m, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	for _, series := range []string{
		`relayd_relayed_bytes_total{direction="in",protocol="imap"}`,
		`relayd_relayed_bytes_total{direction="out",protocol="imap"}`,
		`relayd_relayed_bytes_total{direction="in",protocol="smtp"}`,
		`relayd_upstream_auth_total{account="support",source="imap"}`,
		`relayd_queue_oldest_message_age_seconds{account="support"}`,
		`relayd_warm_logins_total{account="support",outcome="served",protocol="imap"}`,
		`relayd_panics_recovered_total`, // process-wide: other tests recover panics too
	} {
		if got := metricValue(m, series); got < 0 {
			t.Errorf("%s missing:\n%s", series, m)
		}
	}
	if !regexp.MustCompile(`(?m)^relayd_build_info\{commit="[^"]*",goversion="go[^"]+",version="[^"]+"\} 1$`).MatchString(m) {
		t.Errorf("no build info:\n%s", m)
	}
	if strings.Contains(m, "@example.net") || strings.Contains(m, "2026") {
		t.Error("an address or a queue ID became a label")
	}
}

// The shipped alert rules are valid Prometheus rules.
func TestAlertRules(t *testing.T) {
	promtool := realserver.RequireBinary(t, "promtool", "prometheus")
	out, err := exec.Command(promtool, "check", "rules", "../../packaging/prometheus/relayd.rules.yml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SUCCESS: 8 rules found") {
		t.Errorf("promtool check rules: %v\n%s", err, out)
	}
}

// Ten wrong passwords lock the user out: IMAP answers NO [UNAVAILABLE],
// SMTP 454 4.7.0, status lists it, and the log says so once.
// [login] max_failures reaches the guard behind both listeners.
func TestLockoutThroughTheListeners(t *testing.T) {
	td := startDaemon(t, func(c *testkit.Config, _ *Options) { c.Login = []string{"max_failures = 4"} })
	login := func(pass string) string {
		c, err := net.Dial("tcp", td.d.IMAPAddrs()[0])
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		br.ReadString('\n')
		io.WriteString(c, "a LOGIN "+user+" "+pass+"\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			if strings.HasPrefix(line, "a ") {
				return line
			}
		}
	}
	for range 4 { // the default of 10 would not lock yet
		login("wrong")
	}
	if got := login(password); !strings.HasPrefix(got, "a NO [UNAVAILABLE] too many failed logins") {
		t.Errorf("the right password while locked out: %q", got)
	}
	err := td.send("x@example.net", "x")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 454 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 0}) {
		t.Errorf("SMTP AUTH while locked out = %v, want 454 4.7.0", err)
	}
	if l := td.d.Status().LockedOut; len(l) != 1 || l[0].User != user {
		t.Errorf("status locked out = %+v", l)
	}
	if n := strings.Count(td.logs.String(), "locked out after repeated failed logins"); n != 1 {
		t.Errorf("the lockout was logged %d times", n)
	}
}
