package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
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

// check-config catches what serve would trip on, each named by its key;
// serve refuses the same files.
func TestCheckConfigCatches(t *testing.T) {
	e := newEnv(t)
	good, _ := os.ReadFile(e.cfg)
	secret := filepath.Join(e.dir, "client.secret")
	for _, tc := range []struct {
		name, edit, want string
	}{
		{"placeholder hash", `local_password_hash = "$2a$10$..."`, `account[1].local_password_hash: not a bcrypt hash`},
		{"port out of range", `listen = ["127.0.0.1:99999"]`, `imap.listen[0]: "127.0.0.1:99999": port "99999" is not a number`},
		{"wrong type", `send_as = "x"`, `account[1].send_as: line`},
		{"empty file", "", `no [[account]]`},
		{"world-readable secret", "chmod", `chmod o-r ` + secret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := string(good)
			os.Chmod(secret, 0o600)
			switch {
			case tc.edit == "":
				doc = ""
			case tc.edit == "chmod":
				os.Chmod(secret, 0o644)
			case strings.HasPrefix(tc.edit, "listen"):
				doc = regexp.MustCompile(`(?m)^listen = \[.*\]$`).ReplaceAllString(doc, tc.edit)
			case strings.HasPrefix(tc.edit, "local_password_hash"):
				doc = regexp.MustCompile(`(?m)^local_password_hash = .*$`).ReplaceAllLiteralString(doc, tc.edit)
			default:
				doc += tc.edit + "\n"
			}
			os.WriteFile(e.cfg, []byte(doc), 0o600)
			defer os.WriteFile(e.cfg, good, 0o600)
			defer os.Chmod(secret, 0o600)
			out, code := e.run("check-config", e.cfg)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("check-config: exit %d\n%s\nwant %q", code, out, tc.want)
			}
			out, code = e.run("serve", "-c", e.cfg)
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Errorf("serve: exit %d\n%s\nwant a refusal naming %q", code, out, tc.want)
			}
		})
	}
}
