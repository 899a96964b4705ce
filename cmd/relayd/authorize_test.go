package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/status"
)

// authorizeRun is a relayd authorize process whose stdin and stdout the
// test drives as a person at the terminal would.
type authorizeRun struct {
	t     *testing.T
	e     *env
	cmd   *exec.Cmd
	stdin io.WriteCloser
	lines chan string // stdout and stderr, line by line
	mu    sync.Mutex
	out   strings.Builder
	done  chan struct{}
}

// interactiveEnv is newEnv with the account set up for interactive
// sign-ins at the fake IdP; tenant makes the IdP answer as Microsoft's
// multi-tenant endpoints do.
func interactiveEnv(t *testing.T, tenant string) *env {
	t.Helper()
	e := newEnv(t)
	e.idp.SetTenantID(tenant)
	e.idp.SetDeviceTiming(1, time.Minute)
	a := &e.conf.Accounts[0]
	a.AuthURL, a.DeviceAuthURL, a.Issuer = e.idp.AuthURL(), e.idp.DeviceAuthURL(), e.idp.IssuerURL()
	e.writeConfig()
	// Registered first, so it runs last: after every process's output
	// was recorded.
	t.Cleanup(func() { e.sweepSecrets() })
	return e
}

func (e *env) startAuthorize(args ...string) *authorizeRun {
	e.t.Helper()
	args = append([]string{"authorize", "-c", e.cfg, "support"}, args...)
	cmd := exec.Command(relaydBin, args...)
	stdin, _ := cmd.StdinPipe()
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	r := &authorizeRun{t: e.t, e: e, cmd: cmd, stdin: stdin, lines: make(chan string, 1000), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			r.mu.Lock()
			r.out.WriteString(sc.Text() + "\n")
			r.mu.Unlock()
			r.lines <- sc.Text()
		}
	}()
	go func() { cmd.Wait(); pw.Close(); close(r.done) }()
	e.t.Cleanup(func() {
		cmd.Process.Kill()
		<-r.done
		e.record("relayd "+strings.Join(args, " "), []byte(r.output()))
	})
	return r
}

func (r *authorizeRun) output() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.out.String()
}

// waitLine reads output until a line matches re and returns its groups.
func (r *authorizeRun) waitLine(re *regexp.Regexp) []string {
	r.t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case l := <-r.lines:
			if m := re.FindStringSubmatch(l); m != nil {
				return m
			}
		case <-r.done:
			r.t.Fatalf("relayd authorize ended before printing %s:\n%s", re, r.output())
		case <-timeout:
			r.t.Fatalf("relayd authorize did not print %s:\n%s", re, r.output())
		}
	}
}

// wait waits for the process to end and returns its output and exit code.
func (r *authorizeRun) wait() (string, int) {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(90 * time.Second):
		r.t.Fatalf("relayd authorize did not end:\n%s", r.output())
	}
	for len(r.lines) > 0 {
		<-r.lines
	}
	return r.output(), r.cmd.ProcessState.ExitCode()
}

var (
	userCodeRe = regexp.MustCompile(`enter the code\s+(\S+)`)
	authURLRe  = regexp.MustCompile(`^\s+(http://\S+/authorize\?\S+)`)
)

// grantStored reads the token store's file for support, or nil.
func (e *env) grantStored() *auth.Grant {
	g, err := (&auth.Store{Dir: filepath.Join(e.dir, "state")}).Load("support")
	if err != nil {
		return nil
	}
	return g
}

// browse follows the authorization URL as the person's browser does, up
// to the redirect back to relayd, and returns where it was sent.
func browse(t *testing.T, authURL string) string {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != http.StatusFound || loc == "" {
		t.Fatalf("authorization endpoint answered %s", resp.Status)
	}
	return loc
}

func TestAuthorizeDeviceApproved(t *testing.T) {
	e := interactiveEnv(t, "9f0c7d2e-1111-4a4a-b5b5-000000000001")
	r := e.startAuthorize("--progress-interval", "200ms")
	code := r.waitLine(userCodeRe)[1]
	r.waitLine(regexp.MustCompile(`still waiting for the sign-in; the code expires in`))
	if err := e.idp.ApproveDevice(code, mbox); err != nil {
		t.Fatal(err)
	}
	out, exit := r.wait()
	if exit != 0 || !strings.Contains(out, "signed in as "+mbox) || !strings.Contains(out, "relayd is not running, the grant is stored") {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	g := e.grantStored()
	if g == nil || g.RefreshToken == "" || g.Subject != mbox || g.IDToken != "" {
		t.Fatalf("stored grant = %+v; want a refresh token, the subject and no ID token", g)
	}
}

func TestAuthorizeDeviceFailures(t *testing.T) {
	for _, tc := range []struct {
		name string
		act  func(e *env, code string)
		want string
	}{
		{"declined", func(e *env, code string) { e.idp.DeclineDevice(code) }, "the sign-in was declined"},
		{"wrong account", func(e *env, code string) {
			e.idp.SignInAs("intruder@example.org")
			e.idp.ApproveDevice(code, mbox)
		}, "the sign-in was as intruder@example.org, but the account's login is " + mbox},
		{"conditional access", func(e *env, code string) { e.idp.BlockDeviceFlow() }, "relayd authorize support --browser"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := interactiveEnv(t, "")
			r := e.startAuthorize()
			code := r.waitLine(userCodeRe)[1]
			tc.act(e, code)
			out, exit := r.wait()
			if exit == 0 || !strings.Contains(out, tc.want) || !strings.Contains(out, "nothing was stored") {
				t.Errorf("exit %d, want an error saying %q:\n%s", exit, tc.want, out)
			}
			if e.grantStored() != nil {
				t.Error("a grant was stored")
			}
		})
	}
}

func TestAuthorizeDeviceExpired(t *testing.T) {
	e := interactiveEnv(t, "")
	e.idp.SetDeviceTiming(1, 2*time.Second)
	r := e.startAuthorize()
	r.waitLine(userCodeRe)
	out, exit := r.wait()
	if exit == 0 || !strings.Contains(out, "the code expired before the sign-in was completed") {
		t.Errorf("exit %d:\n%s", exit, out)
	}
	if e.grantStored() != nil {
		t.Error("a grant was stored")
	}
}

// A dropped connection while polling is not the end: relayd keeps polling
// with the same code.
func TestAuthorizeDevicePollsThroughNetworkErrors(t *testing.T) {
	e := interactiveEnv(t, "")
	e.idp.DropDevicePolls(1)
	r := e.startAuthorize()
	code := r.waitLine(userCodeRe)[1]
	r.waitLine(regexp.MustCompile(`still waiting with the same code`))
	e.idp.ApproveDevice(code, mbox)
	if out, exit := r.wait(); exit != 0 || e.grantStored() == nil {
		t.Errorf("exit %d:\n%s", exit, out)
	}
}

func TestAuthorizeBrowserLoopbackRedirect(t *testing.T) {
	e := interactiveEnv(t, "")
	r := e.startAuthorize("--browser")
	authURL := r.waitLine(authURLRe)[1]
	r.waitLine(regexp.MustCompile(`ssh -L (\d+):127\.0\.0\.1:(\d+) \S+@\S+`))
	loc := browse(t, authURL)
	if !strings.HasPrefix(loc, "http://127.0.0.1:") {
		t.Fatalf("redirected to %q", loc)
	}
	resp, err := http.Get(loc) // the browser follows the redirect to relayd
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	out, exit := r.wait()
	if exit != 0 || e.grantStored() == nil {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	for _, p := range []string{"code_challenge_method=S256", "login_hint=" + strings.ReplaceAll(mbox, "@", "%40"), "state=", "nonce="} {
		if !strings.Contains(authURL, p) {
			t.Errorf("authorization URL lacks %s: %s", p, authURL)
		}
	}
}

// The browser is on another machine: its redirect fails to load, and the
// person pastes the address. A forged state and a code already used are
// refused.
func TestAuthorizeBrowserPastedURL(t *testing.T) {
	e := interactiveEnv(t, "9f0c7d2e-1111-4a4a-b5b5-000000000002")
	r := e.startAuthorize("--browser")
	loc := browse(t, r.waitLine(authURLRe)[1])
	fmt.Fprintln(r.stdin, loc)
	if out, exit := r.wait(); exit != 0 || e.grantStored() == nil {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	first := e.grantStored()

	// A forged state.
	r = e.startAuthorize("--browser")
	loc2 := browse(t, r.waitLine(authURLRe)[1])
	fmt.Fprintln(r.stdin, regexp.MustCompile(`state=[^&]+`).ReplaceAllString(loc2, "state=forged"))
	out, exit := r.wait()
	if exit == 0 || !strings.Contains(out, "its state differs") || !strings.Contains(out, "nothing was stored") {
		t.Errorf("forged state: exit %d:\n%s", exit, out)
	}

	// The first sign-in's code, replayed into a new one (with the new
	// state, as an attacker who saw both would).
	r = e.startAuthorize("--browser")
	authURL := r.waitLine(authURLRe)[1]
	state := regexp.MustCompile(`state=([^&]+)`).FindStringSubmatch(authURL)[1]
	replayed := regexp.MustCompile(`state=[^&]+`).ReplaceAllString(loc, "state="+state)
	fmt.Fprintln(r.stdin, replayed)
	out, exit = r.wait()
	if exit == 0 || !strings.Contains(out, "that code was already used") || !strings.Contains(out, "nothing was stored") {
		t.Errorf("replayed code: exit %d:\n%s", exit, out)
	}
	if g := e.grantStored(); g.RefreshToken != first.RefreshToken {
		t.Error("a refused sign-in replaced the stored grant")
	}
}

func TestAuthorizeBrowserErrors(t *testing.T) {
	for _, tc := range []struct{ code, desc, want string }{
		{"access_denied", "AADSTS65004: User declined to consent to access the app.", "the sign-in was cancelled or access was denied"},
		{"consent_required", "AADSTS65001: The user or administrator has not consented to use the application.", "needs an administrator's consent"},
	} {
		t.Run(tc.code, func(t *testing.T) {
			e := interactiveEnv(t, "")
			e.idp.FailNextAuthorization(tc.code, tc.desc)
			r := e.startAuthorize("--browser")
			fmt.Fprintln(r.stdin, browse(t, r.waitLine(authURLRe)[1]))
			out, exit := r.wait()
			if exit == 0 || !strings.Contains(out, tc.want) || e.grantStored() != nil {
				t.Errorf("exit %d:\n%s", exit, out)
			}
		})
	}
	e := interactiveEnv(t, "")
	r := e.startAuthorize("--browser")
	r.waitLine(authURLRe)
	fmt.Fprintln(r.stdin, strings.Repeat("x", 40<<10))
	if out, exit := r.wait(); exit == 0 || !strings.Contains(out, "paste only the browser's address") {
		t.Errorf("huge pasted line: exit %d:\n%s", exit, out)
	}
}

// With the daemon running, the sign-in is handed over: the daemon checks
// it and logins work at once. A grant it cannot verify is refused and the
// current one stays in force.
func TestAuthorizeHandoverVerified(t *testing.T) {
	e := interactiveEnv(t, "")
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	d := e.serve()
	c := status.NewClient(e.socket)
	err := c.InstallGrant(context.Background(), "support", &auth.Grant{RefreshToken: "x"})
	if err == nil || !strings.Contains(err.Error(), "the current grant stays in force") {
		t.Fatalf("unverifiable grant = %v, want refused", err)
	}
	if cl, err := e.login(localPassword); err != nil {
		t.Fatalf("login after a refused grant = %v\n%s", err, d.stderr.String())
	} else {
		cl.Close()
	}
	if out, code := e.run("status", "--socket", e.socket); code != 0 {
		t.Errorf("status after a refused grant: exit %d\n%s", code, out)
	}

	e.idp.Revoke(mbox)
	if _, err := e.login(localPassword); err == nil {
		t.Fatal("login after revocation worked")
	}
	r := e.startAuthorize("--device")
	e.idp.ApproveDevice(r.waitLine(userCodeRe)[1], mbox)
	out, exit := r.wait()
	if exit != 0 || !strings.Contains(out, "the running daemon checked the grant and uses it now") {
		t.Fatalf("exit %d:\n%s", exit, out)
	}
	if cl, err := e.login(localPassword); err != nil {
		t.Fatalf("login after the sign-in = %v", err)
	} else {
		cl.Close()
	}
}

// A root-run authorize without a daemon leaves the grant (and its lock)
// owned by the state directory's owner, the service user, who must read it.
func TestAuthorizeAsRootKeepsStateOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, as CI runs")
	}
	e := newEnv(t)
	state := filepath.Join(e.dir, "state")
	os.MkdirAll(state, 0o700)
	os.Chown(e.dir, 65534, 65534)
	if err := os.Chown(state, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	for _, f := range []string{"support.json", "support.lock"} {
		fi, err := os.Stat(filepath.Join(state, f))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 65534 || st.Gid != 65534 {
			t.Errorf("%s owned by %d:%d, want the state directory's 65534:65534", f, st.Uid, st.Gid)
		}
	}
}

// Ctrl-C while waiting for the sign-in stores nothing.
func TestAuthorizeInterrupted(t *testing.T) {
	e := interactiveEnv(t, "")
	r := e.startAuthorize("--device")
	r.waitLine(userCodeRe)
	r.cmd.Process.Signal(os.Interrupt)
	out, exit := r.wait()
	if exit == 0 || !strings.Contains(out, "interrupted; nothing was stored") || e.grantStored() != nil {
		t.Errorf("exit %d:\n%s", exit, out)
	}
}
