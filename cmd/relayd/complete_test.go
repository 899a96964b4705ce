package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The shell completions offer account names and queue IDs through the
// hidden 'relayd __complete': from the status socket when the daemon
// runs, account names from the configuration when it does not, and
// silently nothing (exit 0) when neither can be read. bash's completion
// is driven for real.
func TestCompletion(t *testing.T) {
	e := newEnv(t)
	smtpAddr := e.writeSMTPConfig("127.0.0.1:9", "1h", "2h")
	complete := func(args ...string) string {
		t.Helper()
		out, code := e.run(append([]string{"__complete"}, args...)...)
		if code != 0 {
			t.Errorf("relayd __complete %s: exit %d %s", args, code, out)
		}
		return out
	}
	if got := complete("accounts", "-c", e.cfg); got != "support\n" {
		t.Errorf("accounts with the daemon down = %q, want the configuration's", got)
	}
	if got := complete("ids", "-c", e.cfg); got != "" {
		t.Errorf("ids with the daemon down = %q, want nothing", got)
	}
	if got := complete("accounts", "-c", filepath.Join(e.dir, "missing.toml")); got != "" {
		t.Errorf("accounts without configuration or daemon = %q, want nothing", got)
	}
	e.serve()
	id := e.submitOne(smtpAddr)
	if got := complete("ids", "-c", e.cfg); got != id+"\n" {
		t.Errorf("ids = %q, want %q", got, id)
	}
	if got := complete("accounts", "-c", e.cfg); got != "support\n" {
		t.Errorf("accounts = %q", got)
	}

	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash to drive the completion")
	}
	script, _ := filepath.Abs("../../packaging/completions/relayd.bash")
	for _, tc := range []struct {
		line string
		want string
	}{
		{"relayd authorize -c " + e.cfg + " su", "support"},
		{"relayd queue -c " + e.cfg + " retry " + id[:8], id},
		{"relayd queue -c " + e.cfg + " release ", "support " + id},
		{"relayd doctor -c " + e.cfg + " s", "support"},
	} {
		words := strings.Split(tc.line, " ")
		prog := `source "$1"; COMP_WORDS=(` + strings.Join(words, " ") + ` ""); COMP_CWORD=` + strconv.Itoa(len(words))
		if !strings.HasSuffix(tc.line, " ") {
			prog = `source "$1"; COMP_WORDS=(` + strings.Join(words, " ") + `); COMP_CWORD=` + strconv.Itoa(len(words)-1)
		}
		prog += `; _relayd; echo "${COMPREPLY[*]}"`
		cmd := exec.Command(bash, "-c", prog, "bash", script)
		cmd.Env = append(os.Environ(), "PATH="+filepath.Dir(relaydBin)+":"+os.Getenv("PATH"))
		out, err := cmd.CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Errorf("bash completion of %q = %q (%v), want %q", tc.line, out, err, tc.want)
		}
	}
}
