package daemon

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
)

// benchDaemon runs a daemon with n accounts against the fake servers; its
// configuration file can be rewritten from tc for reloads.
func benchDaemon(b *testing.B, n int) (*Daemon, *testkit.Config, string, *testkit.IdP, *testkit.IMAPUpstream) {
	env := relaytest.New(b)
	idp, dir := env.IdP, env.Dir
	up := env.IMAPUpstream(testkit.IMAPOptions{})
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	tc := &testkit.Config{StateDir: env.Store.Dir, StatusSocket: filepath.Join(dir, "status.sock"),
		IMAPListen: []string{"127.0.0.1:0"}, LogLevel: "warn"}
	for i := range n {
		email := fmt.Sprintf("user%03d@example.com", i)
		up.AddUser(email)
		tc.Accounts = append(tc.Accounts, testkit.Account{Name: fmt.Sprintf("acct%03d", i), Provider: "custom", Email: email,
			ClientID: "client", TokenURL: idp.TokenURL(), IMAPServer: up.Addr, Security: "none", Direction: "incoming",
			LocalUser: fmt.Sprintf("user%03d", i), LocalPasswordHash: string(hash)})
		env.Grant(tc.Accounts[i].Name, "client", email)
	}
	path := filepath.Join(dir, "relayd.toml")
	os.WriteFile(path, []byte(tc.TOML()), 0o600)
	cfg, err := config.Load(path)
	if err != nil {
		b.Fatal(err)
	}
	d, err := New(cfg, Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), ConfigPath: path, AuthFailureDelay: -1})
	if err != nil {
		b.Fatal(err)
	}
	d.Start()
	b.Cleanup(func() { d.Shutdown(context.Background()) })
	return d, tc, path, idp, up
}

// BenchmarkReload100Accounts1000Sessions measures a reload that edits one
// of 100 accounts and adds another while 1,000 IMAP sessions are open, and
// checks that every session is still there after it.
// go test -bench Reload -run - ./internal/daemon
func BenchmarkReload100Accounts1000Sessions(b *testing.B) {
	const accounts, sessions = 100, 1000
	d, tc, path, idp, up := benchDaemon(b, accounts)
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	var clients []*imapclient.Client
	for i := range sessions {
		c, err := imapclient.DialInsecure(d.IMAPAddrs()[0], nil)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if err := c.Login(fmt.Sprintf("user%03d", i%accounts), password).Wait(); err != nil {
			b.Fatal(err)
		}
		clients = append(clients, c)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		tc.Accounts[0].LocalPasswordHash = testkit.UnusedHash // edited
		tc.Accounts = append(tc.Accounts[:accounts], testkit.Account{Name: fmt.Sprintf("extra%d", i), Provider: "custom",
			Email: "extra@example.com", ClientID: "client", TokenURL: idp.TokenURL(), IMAPServer: up.Addr, Security: "none",
			Direction: "incoming", LocalUser: "extra", LocalPasswordHash: string(hash)}) // added
		os.WriteFile(path, []byte(tc.TOML()), 0o600)
		if err := d.Reload(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	dropped := 0
	for _, c := range clients {
		if err := c.Noop().Wait(); err != nil {
			dropped++
		}
	}
	if dropped > 0 {
		b.Fatalf("%d of %d sessions dropped by the reloads", dropped, sessions)
	}
	b.ReportMetric(float64(sessions-dropped), "sessions-kept")
}

// BenchmarkScrapeMetrics100Accounts measures GET /metrics on the status
// socket with 100 accounts. go test -bench Scrape -run - ./internal/daemon
func BenchmarkScrapeMetrics100Accounts(b *testing.B) {
	d, _, _, _, _ := benchDaemon(b, 100)
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var dl net.Dialer
		return dl.DialContext(ctx, "unix", d.config().StatusSocket)
	}}}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get("http://relayd/metrics")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
