package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-imap/v2/imapclient"
	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/status"
)

var relaydBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "relayd-bin-")
	if err != nil {
		panic(err)
	}
	relaydBin = filepath.Join(dir, "relayd")
	out, err := exec.Command("go", "build", "-race", "-o", relaydBin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "building relayd: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// env is a relayd configuration against a fake IdP (confidential client)
// and a fake Exchange-style upstream, with known secrets.
type env struct {
	t         *testing.T
	dir, cfg  string
	socket    string
	idp       *testkit.IdP
	up        *testkit.IMAPUpstream
	imapAddr  string
	conf      testkit.Config // what writeConfig writes to cfg
	secrets   []string       // every secret the test knows of
	outputs   *bytes.Buffer
	outputsMu sync.Mutex
	// wrap, when set, is a command that serve runs relayd under: its
	// arguments, then relayd's path and arguments (which it must exec, so
	// that the PID is relayd's).
	wrap []string
}

const (
	localPassword = "local-Secret-pw-7Q"
	wrongPassword = "wrong-Secret-pw-9Z"
	clientSecret  = "client-Secret-3F8k"
	mbox          = "support@example.com"
)

func newEnv(t *testing.T) *env {
	t.Helper()
	idp, err := testkit.NewIdP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	idp.AddClient("client", clientSecret)
	up, err := testkit.NewIMAPUpstream(idp, testkit.IMAPOptions{Style: testkit.Exchange})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	up.AddUser(mbox)
	up.Deliver(mbox, []byte("Subject: hello\r\n\r\nhello\r\n"))
	dir := t.TempDir()
	ln, err := realserver.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte(localPassword), bcrypt.MinCost)
	secretFile := filepath.Join(dir, "client.secret")
	os.WriteFile(secretFile, []byte(clientSecret+"\n"), 0o600)
	e := &env{
		t: t, dir: dir, cfg: filepath.Join(dir, "relayd.toml"), socket: filepath.Join(dir, "status.sock"),
		idp: idp, up: up, imapAddr: ln, outputs: &bytes.Buffer{},
		secrets: []string{localPassword, wrongPassword, clientSecret},
	}
	e.conf = testkit.Config{
		StateDir: filepath.Join(dir, "state"), StatusSocket: e.socket, LogLevel: "debug",
		IMAPListen: []string{ln},
		Accounts: []testkit.Account{{
			Name: "support", Provider: "custom", Email: mbox, ClientID: "client", ClientSecretFile: secretFile,
			TokenURL: idp.TokenURL(), IMAPServer: up.Addr, Security: "none", Direction: "incoming",
			LocalUser: "helpdesk", LocalPasswordHash: string(hash),
		}},
	}
	e.writeConfig()
	return e
}

// writeConfig writes e.conf to the configuration file.
func (e *env) writeConfig() {
	e.t.Helper()
	if err := os.WriteFile(e.cfg, []byte(e.conf.TOML()), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// record keeps command output for the secrets sweep.
func (e *env) record(what string, b []byte) {
	e.outputsMu.Lock()
	defer e.outputsMu.Unlock()
	fmt.Fprintf(e.outputs, "--- %s\n%s\n", what, b)
}

// run runs a relayd command and returns its combined output and exit code.
func (e *env) run(args ...string) (string, int) {
	e.t.Helper()
	cmd := exec.Command(relaydBin, args...)
	out, err := cmd.CombinedOutput()
	e.record("relayd "+strings.Join(args, " "), out)
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("relayd %v: %v", args, err)
	}
	return string(out), code
}

// rtFile writes a fresh refresh token for mbox to a file.
func (e *env) rtFile() string {
	f := filepath.Join(e.dir, fmt.Sprintf("rt-%d", time.Now().UnixNano()))
	os.WriteFile(f, []byte(e.idp.IssueRefreshToken("client", mbox)+"\n"), 0o600)
	return f
}

type daemonProc struct {
	cmd    *exec.Cmd
	stderr *testkit.SyncBuffer
	exited chan struct{}
	// lines is signalled (without blocking) after each log line.
	lines chan struct{}
}

// waitLog waits until the daemon's log has a line containing s, woken by
// each new line rather than polling. It fails the test when the daemon
// exits or timeout passes first.
func (d *daemonProc) waitLog(t *testing.T, s string, timeout time.Duration) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !strings.Contains(d.stderr.String(), s) {
		select {
		case <-d.lines:
		case <-d.exited:
			t.Fatalf("relayd exited before logging %q:\n%s", s, d.stderr.String())
		case <-deadline.C:
			t.Fatalf("relayd did not log %q within %s:\n%s", s, timeout, d.stderr.String())
		}
	}
}

// serve starts 'relayd serve' and returns once it logged that it started.
func (e *env) serve() *daemonProc {
	e.t.Helper()
	return e.serveEnv(nil)
}

func (e *env) serveEnv(extraEnv []string) *daemonProc {
	e.t.Helper()
	cmd := exec.Command(relaydBin, "serve", "-c", e.cfg, "-grace", "2s")
	if e.wrap != nil {
		cmd = exec.Command(e.wrap[0], append(e.wrap[1:], cmd.Args...)...)
	}
	cmd.Env = append(os.Environ(), extraEnv...)
	pr, pw := io.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	d := &daemonProc{cmd: cmd, stderr: &testkit.SyncBuffer{}, exited: make(chan struct{}), lines: make(chan struct{}, 1)}
	started := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(pr)
		once := sync.Once{}
		for sc.Scan() {
			d.stderr.Write(append(sc.Bytes(), '\n'))
			select {
			case d.lines <- struct{}{}:
			default:
			}
			if strings.Contains(sc.Text(), `msg="relayd started"`) {
				once.Do(func() { close(started) })
			}
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(d.exited) }()
	e.t.Cleanup(func() {
		cmd.Process.Kill()
		<-d.exited
		e.record("relayd serve stderr", []byte(d.stderr.String()))
	})
	select {
	case <-started:
	case <-d.exited:
		if slices.ContainsFunc(extraEnv, func(v string) bool { return strings.HasPrefix(v, "RELAYD_FAILPOINT=") }) &&
			strings.Contains(d.stderr.String(), "crash-test failpoint armed") {
			// The failpoint fired while starting (delivering recovered
			// mail): the caller expected it to kill relayd.
			return d
		}
		e.t.Fatalf("relayd serve exited:\n%s", d.stderr.String())
	case <-time.After(30 * time.Second):
		e.t.Fatalf("relayd serve did not start:\n%s", d.stderr.String())
	}
	return d
}

func (e *env) login(pass string) (*imapclient.Client, error) {
	c, err := imapclient.DialInsecure(e.imapAddr, nil)
	if err != nil {
		return nil, err
	}
	if err := c.Login("helpdesk", pass).Wait(); err != nil {
		c.Close()
		e.record("IMAP login error", []byte(err.Error()))
		return nil, err
	}
	return c, nil
}

// The whole life of an account against a real relayd process: authorize
// before the daemon runs, serve, revocation, a grant handed over to the
// running daemon, status as a Nagios check — and then a sweep for secrets in
// everything relayd said or showed.
func TestDaemonLifecycleAndSecretsSweep(t *testing.T) {
	e := newEnv(t)
	if out, code := e.run("check-config", e.cfg); code != 0 {
		t.Fatalf("check-config: %s", out)
	}
	// No daemon yet: authorize writes the token store directly.
	out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile())
	if code != 0 || !strings.Contains(out, "relayd is not running, the grant is stored") {
		t.Fatalf("authorize without daemon: %d %s", code, out)
	}
	d := e.serve()

	c, err := e.login(localPassword)
	if err != nil {
		t.Fatalf("Login() = %v\n%s", err, d.stderr.String())
	}
	if _, err := c.Select("INBOX", nil).Wait(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
	if err != nil || len(msgs) != 1 {
		t.Fatalf("Fetch = %v, %v", msgs, err)
	}
	if _, err := e.login(wrongPassword); err == nil {
		t.Error("login with a wrong password succeeded")
	}

	// status: JSON has the account and its open session.
	out, code = e.run("status", "-c", e.cfg, "--json")
	var st status.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 0 {
		t.Fatalf("status --json: %d %v %s", code, err, out)
	}
	if len(st.Accounts) != 1 || st.Accounts[0].Token.State != "ok" || st.Accounts[0].IMAPSessions != 1 ||
		st.Accounts[0].Token.AccessTokenExpiry.IsZero() {
		t.Errorf("status = %+v", st)
	}
	c.Logout().Wait()
	c.Close()

	// The grant dies: the next login fails with advice, and status says so
	// with Nagios's CRITICAL.
	e.idp.Revoke(mbox)
	_, err = e.login(localPassword)
	if err == nil || !strings.Contains(err.Error(), `mailbox "support" needs reauthorization: run 'relayd authorize support'`) {
		t.Fatalf("login after revocation = %v", err)
	}
	out, code = e.run("status", "--socket", e.socket)
	if code != 2 || !strings.Contains(out, "1 of 1 mailbox needs reauthorization: support") ||
		!strings.Contains(out, "relayd authorize support") {
		t.Errorf("status after revocation: exit %d\n%s", code, out)
	}

	// authorize hands the new grant to the running daemon; the next login
	// uses it at once.
	out, code = e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile())
	if code != 0 || !strings.Contains(out, "the running daemon checked the grant and uses it now") {
		t.Fatalf("authorize with daemon: %d %s", code, out)
	}
	refreshes := e.idp.Refreshes()
	c, err = e.login(localPassword)
	if err != nil {
		t.Fatalf("login after authorize = %v\n%s", err, d.stderr.String())
	}
	c.Close()
	if n := e.idp.Refreshes(); n != refreshes {
		t.Errorf("daemon refreshed %d times instead of using the handed-over token", n-refreshes)
	}
	out, code = e.run("status", "--socket", e.socket)
	if code != 0 || !strings.HasPrefix(out, "all 1 mailbox ok") {
		t.Errorf("status after authorize: exit %d\n%s", code, out)
	}

	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", d.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	e.record("cmdline", cmdline)

	// Graceful stop on SIGTERM.
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("relayd did not stop on SIGTERM")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d\n%s", code, d.stderr.String())
	}
	e.record("relayd serve stderr (final)", []byte(d.stderr.String()))

	e.outputsMu.Lock()
	all := e.outputs.String()
	e.outputsMu.Unlock()
	if !strings.Contains(all, "IMAP login failed") {
		t.Fatalf("the sweep has no daemon log to look at:\n%s", all)
	}
	if n := e.sweepSecrets(); n < 8 {
		t.Errorf("only %d secrets swept; the test lost track of tokens", n)
	}
}

// sweepSecrets fails the test when a secret appears in anything relayd
// printed, logged or showed (e.outputs): the secrets the test chose, and
// every token, code, device code, PKCE verifier and ID token the IdP
// issued or received, and what the token store holds. It returns how many
// it looked for.
func (e *env) sweepSecrets() int {
	e.t.Helper()
	secrets := append(e.secrets, e.idp.Issued()...)
	if b, err := os.ReadFile(filepath.Join(e.dir, "state", "support.json")); err == nil {
		var g struct{ AccessToken, RefreshToken string }
		json.Unmarshal(b, &struct {
			A *string `json:"access_token"`
			R *string `json:"refresh_token"`
		}{&g.AccessToken, &g.RefreshToken})
		secrets = append(secrets, g.AccessToken, g.RefreshToken)
	}
	e.outputsMu.Lock()
	all := e.outputs.String()
	e.outputsMu.Unlock()
	n := 0
	for _, s := range secrets {
		if s == "" {
			continue
		}
		n++
		if strings.Contains(all, s) {
			e.t.Errorf("secret %.6s… appears in relayd's output:\n%s", s, all)
		}
	}
	return n
}

func TestStatusNotRunningIsUnknown(t *testing.T) {
	e := newEnv(t)
	out, code := e.run("status", "--socket", e.socket)
	if code != 3 || !strings.HasPrefix(out, "UNKNOWN: relayd is not running") {
		t.Errorf("status without daemon: exit %d %q", code, out)
	}
}

// status is a Nagios check: a usage error is UNKNOWN (3), never CRITICAL.
func TestStatusUsageErrorIsUnknown(t *testing.T) {
	e := newEnv(t)
	for _, args := range [][]string{
		{"status", "--bogus"},
		{"status", "--socket", e.socket, "extra"},
		{"status", "--socket", e.socket, "--json", "--alive"},
	} {
		out, code := e.run(args...)
		if code != 3 || !strings.Contains(out, "UNKNOWN: relayd status:") {
			t.Errorf("%q: exit %d %q, want 3 UNKNOWN", args, code, out)
		}
	}
}

func TestCheckConfigNamesKey(t *testing.T) {
	e := newEnv(t)
	b, _ := os.ReadFile(e.cfg)
	os.WriteFile(e.cfg, bytes.Replace(b, []byte(`provider = "custom"`), []byte(`provider = "gmial"`), 1), 0o600)
	out, code := e.run("check-config", e.cfg)
	if code != 1 || !strings.Contains(out, `account[1].provider: unknown provider "gmial" (did you mean "gmail"?)`) {
		t.Errorf("check-config: exit %d %s", code, out)
	}
}

func TestHashPasswordReadsStdin(t *testing.T) {
	cmd := exec.Command(relaydBin, "hash-password")
	cmd.Stdin = strings.NewReader("s3cret\n")
	out, err := cmd.Output()
	if err != nil {
		t.Fatal(err)
	}
	h := strings.TrimSpace(string(out))
	if bcrypt.CompareHashAndPassword([]byte(h), []byte("s3cret")) != nil {
		t.Errorf("hash-password printed %q, not a bcrypt hash of the input", h)
	}
	if err := exec.Command(relaydBin, "hash-password", "s3cret").Run(); err == nil {
		t.Error("hash-password accepted the password as an argument")
	}
}

// Test code never ships: relayd demo links the in-process fakes of
// internal/testkit, never package testing or the real-server launchers.
func TestBinaryLinksNoTestCode(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "testing" || strings.HasSuffix(pkg, "/internal/realserver") {
			t.Errorf("relayd links %s", pkg)
		}
	}
	if !strings.Contains(string(out), "github.com/relayd/relayd/internal/testkit") {
		t.Error("go list -deps found no testkit: the check looks at the wrong package")
	}
}
