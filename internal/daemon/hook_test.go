package daemon

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

type hookRun struct {
	t   health.Transition
	err error
}

// startHookDaemon runs a daemon whose on_state_change is script.
func startHookDaemon(t *testing.T, script, timeout string, extra ...string) (*testDaemon, chan hookRun, string) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	if err := os.WriteFile(hook, []byte("#!/bin/sh\n"+script), 0o755); err != nil {
		t.Fatal(err)
	}
	runs := make(chan hookRun, 10)
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Health = append([]string{fmt.Sprintf("on_state_change = [%q, %q]", hook, dir), fmt.Sprintf("hook_timeout = %q", timeout)}, extra...)
		o.OnHook = func(tr health.Transition, err error) { runs <- hookRun{tr, err} }
	})
	return td, runs, dir
}

func awaitHook(t *testing.T, runs chan hookRun) hookRun {
	t.Helper()
	return testkit.Await(t, runs, "hook run", 20*time.Second, func(hookRun) bool { return true })
}

// The hook runs once per transition, with the documented environment and
// nothing of relayd's own.
func TestHookOncePerTransition(t *testing.T) {
	t.Setenv("RELAYD_TEST_SECRET", "inherited-secret")
	td, runs, dir := startHookDaemon(t, `env > "$1/env.$$"; echo "$RELAYD_OLD_STATE $RELAYD_NEW_STATE" >> "$1/log"`, "10s")
	td.idp.Revoke(mailbox)
	td.idp.ExpireAccessTokens()
	for range 3 { // three failing logins: one transition
		if err := td.imapLogin(); err == nil {
			t.Fatal("login with a revoked grant worked")
		}
	}
	r := awaitHook(t, runs)
	if r.err != nil || r.t.Old != health.StateOK || r.t.New != health.StateNeedsReauth {
		t.Fatalf("hook run = %+v", r)
	}
	g, err := auth.ImportRefreshToken(context.Background(), td.d.config().Accounts[0], nil, td.idp.IssueRefreshToken("client", mailbox))
	if err != nil {
		t.Fatal(err)
	}
	if err := td.d.InstallGrant("support", g); err != nil {
		t.Fatal(err)
	}
	r = awaitHook(t, runs)
	if r.t.Old != health.StateNeedsReauth || r.t.New != health.StateOK {
		t.Fatalf("second hook run = %+v", r)
	}
	log, _ := os.ReadFile(filepath.Join(dir, "log"))
	if string(log) != "ok needs_reauth\nneeds_reauth ok\n" {
		t.Errorf("hook saw %q, want one run per transition", log)
	}
	envs, _ := filepath.Glob(filepath.Join(dir, "env.*"))
	if len(envs) == 0 {
		t.Fatal("no environment recorded")
	}
	env, _ := os.ReadFile(envs[0])
	for _, want := range []string{"RELAYD_ACCOUNT=support", "RELAYD_EMAIL=" + mailbox, "RELAYD_OLD_STATE=", "RELAYD_NEW_STATE=",
		"RELAYD_REASON=grant_expired_idle", "RELAYD_ADVICE=", "relayd authorize support"} {
		if !strings.Contains(string(env), want) {
			t.Errorf("hook environment lacks %q:\n%s", want, env)
		}
	}
	if strings.Contains(string(env), "inherited-secret") {
		t.Errorf("the hook inherited relayd's environment:\n%s", env)
	}
	for _, s := range td.idp.Issued() {
		if strings.Contains(string(env), s) {
			t.Errorf("a token reached the hook's environment")
		}
	}
}

// A hook that hangs is killed at hook_timeout, with what it started; one
// that fails is logged. Neither changes anything else.
func TestHookHangingAndFailing(t *testing.T) {
	td, runs, dir := startHookDaemon(t, `sleep 60 & echo $! > "$1/child"; echo $$ > "$1/pid"; wait`, "300ms")
	td.idp.Revoke(mailbox)
	td.idp.ExpireAccessTokens()
	td.imapLogin()
	r := awaitHook(t, runs)
	if r.err == nil {
		t.Fatal("a hanging hook was not stopped")
	}
	for _, f := range []string{"pid", "child"} {
		b, _ := os.ReadFile(filepath.Join(dir, f))
		pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if pid == 0 {
			t.Fatalf("no %s recorded", f)
		}
		if !gone(pid, 5*time.Second) {
			t.Errorf("the hook's %s (%d) still runs after the timeout", f, pid)
		}
	}
	if !strings.Contains(td.logs.String(), "killed after hook_timeout") {
		t.Errorf("no log line for the killed hook:\n%s", td.logs.String())
	}
	if st := td.d.Status().Accounts[0].State; st != health.StateNeedsReauth {
		t.Errorf("state %s after the hook, want needs_reauth", st)
	}

	td2, runs2, _ := startHookDaemon(t, "echo boom >&2; exit 3", "10s")
	td2.idp.Revoke(mailbox)
	td2.idp.ExpireAccessTokens()
	td2.imapLogin()
	if r := awaitHook(t, runs2); r.err == nil {
		t.Fatal("a failing hook reported success")
	}
	if l := td2.logs.String(); !strings.Contains(l, "on_state_change hook failed") || !strings.Contains(l, "exit=3") || !strings.Contains(l, "boom") {
		t.Errorf("the failure is not logged with its exit and output:\n%s", l)
	}
	if st := td2.d.Status().Accounts[0].State; st != health.StateNeedsReauth {
		t.Errorf("state %s after a failing hook", st)
	}
}

// An IdP outage longer than the retry budget turns the mailbox
// disconnected and holds its mail; when the IdP answers again, it is ok by
// itself and the held mail goes out, with no new grant.
func TestDisconnectedRecoversAndDrains(t *testing.T) {
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Health = []string{`retry_budget = 3`, `retry_window = "300ms"`}
	})
	td.idp.SetDown(true)
	td.idp.ExpireAccessTokens()
	td.imapLogin() // the refresh fails: degraded
	td.send("x@example.net", "held while the IdP is down")
	h := td.d.accounts.Get("support").Health
	for changed := h.Changed(); h.State() != health.StateDisconnected; changed = h.Changed() {
		testkit.Await(t, mapChan(changed), "disconnected", 20*time.Second, func(struct{}) bool { return true })
	}
	if st := td.d.Status().Accounts[0]; st.Queue.Held != 1 || st.HeldSince.IsZero() {
		t.Fatalf("while disconnected: %+v", st)
	}
	td.idp.SetDown(false)
	td.waitEvent(queue.EventDelivered)
	if st := h.State(); st != health.StateOK {
		t.Errorf("after the IdP returned: %s", st)
	}
}

// mapChan turns a closed-on-change channel into one that yields once.
func mapChan(c <-chan struct{}) <-chan struct{} {
	out := make(chan struct{}, 1)
	go func() { <-c; out <- struct{}{} }()
	return out
}

// alive reports whether process pid runs (a zombie waiting for a reaper
// does not).
// gone reports whether process pid has ended (or is a zombie) within
// timeout: a SIGKILL takes effect when the process next runs, which on a
// busy machine is not at once. It waits on a pidfd, which becomes readable
// when the process exits.
func gone(pid int, timeout time.Duration) bool {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return !alive(pid) // ESRCH: gone already
	}
	defer unix.Close(fd)
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for deadline := time.Now().Add(timeout); ; {
		left := time.Until(deadline)
		if left <= 0 {
			return !alive(pid)
		}
		n, err := unix.Poll(fds, int(left/time.Millisecond)+1)
		if err == unix.EINTR {
			continue
		}
		return n > 0 || !alive(pid)
	}
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+1:]))
	return len(f) > 0 && f[0] != "Z"
}
