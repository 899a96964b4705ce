package daemon

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// An IdP that answers with a 300 KB error_description full of terminal
// escapes: the hook still runs (its environment stays far below E2BIG),
// and status and the log carry a bounded text with the escapes shown, not
// sent.
func TestHugeIdPErrorBounded(t *testing.T) {
	dir := t.TempDir()
	hook := filepath.Join(dir, "hook")
	os.WriteFile(hook, []byte("#!/bin/sh\nenv > \"$1/env\"\n"), 0o755)
	secret := filepath.Join(dir, "app.secret")
	os.WriteFile(secret, []byte("app-secret\n"), 0o600)
	runs := make(chan hookRun, 10)
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Health = []string{fmt.Sprintf("on_state_change = [%q, %q]", hook, dir)}
		a := &c.Accounts[0]
		a.ClientID, a.ClientSecretFile, a.Grant = "app", secret, "client_credentials"
		// No warm connections: their token fetched ahead would race the
		// login's refusal to the hook.
		noWarm := 0
		a.WarmConnections = &noWarm
		o.OnHook = func(tr health.Transition, err error) { runs <- hookRun{tr, err} }
	})
	huge := "The app \x1b[2J\x1b]0;owned\x07is not allowed " + strings.Repeat("padding ", 300<<10/8) + "\r\n\x00the end"
	td.idp.FailTokenRequests(401, "invalid_client", huge)
	if err := td.imapLogin(); err == nil {
		t.Fatal("login worked though the IdP refuses every token")
	}
	r := awaitHook(t, runs)
	if r.err != nil {
		t.Fatalf("the hook did not run: %v", r.err)
	}
	if r.t.New != health.StateNeedsAdmin {
		t.Errorf("transition to %s, want needs_admin", r.t.New)
	}
	env, err := os.ReadFile(filepath.Join(dir, "env"))
	if err != nil {
		t.Fatalf("the hook wrote no environment: %v", err)
	}
	for _, line := range strings.Split(string(env), "\n") {
		if n := utf8.RuneCountInString(line); n > 600 {
			t.Errorf("hook environment has a line of %d characters: %.80q…", n, line)
		}
	}
	if !strings.Contains(string(env), "RELAYD_ADVICE=") || !strings.Contains(string(env), "is not allowed") {
		t.Errorf("RELAYD_ADVICE lacks the IdP's words:\n%.2000s", env)
	}

	st := td.d.Status().Accounts[0]
	for what, s := range map[string]string{"advice": st.Advice, "last_error": st.LastError} {
		if n := utf8.RuneCountInString(s); n > 1000 || n == 0 {
			t.Errorf("status %s has %d characters, want 1 to 1000", what, n)
		}
		if strings.ContainsAny(s, "\x1b\x07\x00\r") {
			t.Errorf("status %s carries the IdP's control characters: %q", what, s)
		}
	}
	if !strings.Contains(st.LastError, `The app \x1b[2J\x1b]0;owned\x07is not allowed`) {
		t.Errorf("status last_error %q does not show the escapes as text", st.LastError)
	}
	for _, line := range strings.Split(td.logs.String(), "\n") {
		if len(line) > 4000 {
			t.Errorf("a log line of %d bytes: %.200s…", len(line), line)
		}
	}
}
