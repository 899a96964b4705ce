package main

import (
	"bytes"
	"errors"
	"os/exec"
	"regexp"
	"runtime"
	"strings"
	"testing"
)

// The command line behaves like a Unix tool: help on stdout with exit 0,
// usage errors on stderr with exit 2, --version, every flag in its help.
func TestCommandLine(t *testing.T) {
	e := newEnv(t)
	for _, tc := range []struct {
		args   []string
		exit   int
		stdout string // regexp; "" = must be empty
		stderr string // regexp; "" = must be empty
	}{
		{nil, 2, "", `usage: relayd COMMAND`},
		{[]string{"--help"}, 0, `usage: relayd COMMAND(?s:.*)authorize`, ""},
		{[]string{"-h"}, 0, `usage: relayd COMMAND`, ""},
		{[]string{"help"}, 0, `usage: relayd COMMAND`, ""},
		{[]string{"help", "authorize"}, 0, `usage: relayd authorize(?s:.*)-browser(?s:.*)-device(?s:.*)-progress-interval(?s:.*)-refresh-token-file`, ""},
		{[]string{"authorize", "--help"}, 0, `usage: relayd authorize`, ""},
		{[]string{"queue", "-h"}, 0, `(?s)list \[--json\].*-json`, ""},
		{[]string{"status", "-h"}, 0, `(?s)-json.*-socket`, ""},
		{[]string{"serve", "-h"}, 0, `(?s)-c file.*-grace`, ""},
		{[]string{"demo", "-h"}, 0, `(?s)-listen.*-smtp-listen`, ""},
		{[]string{"--version"}, 0, `^relayd \S+ \(commit \S+, ` + regexp.QuoteMeta(runtime.Version()) + `\)\n$`, ""},
		{[]string{"version"}, 0, `^relayd \S+ \(commit \S+, go`, ""},
		{[]string{"help", "nosuch"}, 2, "", `unknown command "nosuch"`},
		{[]string{"nosuch"}, 2, "", `unknown command "nosuch"`},
		{[]string{"serve", "--bogus"}, 2, "", `flag provided but not defined: -bogus(?s:.*)usage: relayd serve`},
		{[]string{"authorize"}, 2, "", `expected exactly one account name(?s:.*)usage: relayd authorize`},
		{[]string{"authorize", "-c", e.cfg, "support", "--device", "--browser"}, 2, "", `use one of --device, --browser`},
		{[]string{"queue", "-c", e.cfg}, 2, "", `a queue command is needed`},
		{[]string{"queue", "-c", e.cfg, "frobnicate"}, 2, "", `unknown queue command "frobnicate"`},
		{[]string{"queue", "-c", e.cfg, "list", "--json"}, 0, `^\[\]\n$`, ""},
		{[]string{"check-config", e.cfg}, 0, `ok, 1 account`, ""},
	} {
		cmd := exec.Command(relaydBin, tc.args...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		exit := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			exit = ee.ExitCode()
		}
		name := "relayd " + strings.Join(tc.args, " ")
		if exit != tc.exit {
			t.Errorf("%s: exit %d, want %d\nstdout: %s\nstderr: %s", name, exit, tc.exit, stdout.String(), stderr.String())
		}
		for _, s := range []struct {
			what, got, want string
		}{{"stdout", stdout.String(), tc.stdout}, {"stderr", stderr.String(), tc.stderr}} {
			if s.want == "" && s.got != "" {
				t.Errorf("%s: %s should be empty, got %q", name, s.what, s.got)
			} else if s.want != "" && !regexp.MustCompile(s.want).MatchString(s.got) {
				t.Errorf("%s: %s %q does not match %s", name, s.what, s.got, s.want)
			}
		}
	}
}
