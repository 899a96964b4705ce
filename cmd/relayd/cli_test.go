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
	"syscall"
	"testing"
	"time"
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
		// The test's configuration leaves key_file at its default, which
		// this machine may not have: then a warning, and exit 0.
		{[]string{"check-config", e.cfg}, 0, `ok, 1 account`, `^(warning: key_file /etc/relayd/relayd.key does not exist: grants are stored unencrypted[^\n]*\n)?$`},
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
		{"tab inside the hash", "local_password_hash = \"$2a$10$jt5dVUuexLPaatNQv9Yj\\tI.Do6BkKGAyyFzID7aVzubZzNNzwkE2Ma\"", `account[1].local_password_hash: holds whitespace ("\t" at byte 28), so bcrypt would never match it`},
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

// The status socket's roles: a user who cannot connect is told so (not
// "not running"), exit 3; one who may read gets status but is refused a
// queue change with exit 3; root's changes are logged with who made them.
func TestStatusSocketRoles(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to act as other users")
	}
	e := newEnv(t)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	os.Chmod(e.dir, 0o755)
	os.Chmod(filepath.Dir(e.dir), 0o755)
	d := e.serve()
	// A copy nobody may run (the test binary's directory is root's).
	bin := filepath.Join(e.dir, "relayd-for-nobody")
	b, _ := os.ReadFile(relaydBin)
	os.WriteFile(bin, b, 0o755)
	asNobody := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		} else if err != nil {
			t.Fatalf("running relayd as nobody: %v", err)
		}
		return string(out), 0
	}
	out, code := asNobody("status", "--socket", e.socket)
	if code != 3 || !strings.Contains(out, "permission denied") || strings.Contains(out, "not running") {
		t.Errorf("status without access: exit %d %q", code, out)
	}
	os.Chown(e.socket, 0, 65534) // as if nobody were in group relayd
	out, code = asNobody("status", "--socket", e.socket)
	if code != 0 || !strings.Contains(out, "all 1 mailbox ok") {
		t.Errorf("status for a member of the socket's group: exit %d %q", code, out)
	}
	cfg := filepath.Join(e.dir, "nobody.toml")
	conf, _ := os.ReadFile(e.cfg)
	os.WriteFile(cfg, conf, 0o644)
	out, code = asNobody("queue", "-c", cfg, "hold", "support")
	if code != 3 || !strings.Contains(out, "permission denied: this needs root") {
		t.Errorf("a queue change by a reader: exit %d %q", code, out)
	}
	if out, code := e.run("queue", "-c", e.cfg, "hold", "support"); code != 0 {
		t.Fatalf("root's queue hold: exit %d %s", code, out)
	}
	d.waitLog(t, `msg="status socket: queue operation" uid=0`, 10*time.Second)
}

// A secret file not in place yet is a warning for check-config (exit 0:
// the file may be put there later, and the example file names such
// files), and serve still refuses to start without it.
func TestCheckConfigMissingFileWarns(t *testing.T) {
	e := newEnv(t)
	secret := filepath.Join(e.dir, "client.secret")
	b, _ := os.ReadFile(secret)
	os.Remove(secret)
	defer os.WriteFile(secret, b, 0o600)
	out, code := e.run("check-config", e.cfg)
	if code != 0 || !strings.Contains(out, "warning: account[1].client_secret_file: cannot read "+secret) {
		t.Errorf("check-config: exit %d\n%s", code, out)
	}
	out, code = e.run("serve", "-c", e.cfg)
	if code == 0 || !strings.Contains(out, "account[1].client_secret_file") {
		t.Errorf("serve: exit %d\n%s\nwant a refusal naming the file", code, out)
	}
}

// The example file as shipped fails check-config, naming every
// placeholder to fill in, so that a service started on it stops at
// ExecStartPre with the same words; the parser accepts it (config tests).
func TestCheckConfigExampleNamesPlaceholders(t *testing.T) {
	e := newEnv(t)
	out, code := e.run("check-config", "../../config.example.toml")
	if code != 1 {
		t.Errorf("check-config of the example file: exit %d, want 1\n%s", code, out)
	}
	for _, want := range []string{
		`account[1].local_password_hash: this is the example file's hash, of the password "change-me"`,
		`account[1].client_id: "00000000-0000-0000-0000-000000000000" is a placeholder: put the Application (client) ID`,
		`account[1].tenant: "contoso.onmicrosoft.com" is a placeholder`,
		`account[1].email: "support@contoso.com" is an example address`,
		`account[1].login: "agent@contoso.com" is an example address`,
		`account[2].local_password_hash: this is the example file's hash`,
		`account[2].email: "scanner@example.org" is an example address`,
		`account[2].imap_server: "mail.example.org:993" is an example server`,
		`../../config.example.toml: 8 problems to fix, named above`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("check-config of the example file does not say %q:\n%s", want, out)
		}
	}
}

// Secret files are checked as the user relayd runs as (the owner of
// state_dir, or --as USER), not as root who runs check-config: a secret
// root:root 0600 passes for root and fails for the service user, with
// the chgrp that fixes it; serve as that user would not start.
func TestCheckConfigFilesAsServiceUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to check files for another user")
	}
	e := newEnv(t)
	secret := filepath.Join(e.dir, "client.secret")
	if out, code := e.run("check-config", e.cfg); code != 0 || !strings.Contains(out, "files readable by root (uid 0)") {
		t.Fatalf("check-config as root with state_dir missing: exit %d\n%s", code, out)
	}
	want := "account[1].client_secret_file: " + secret + " cannot be read by nobody (uid 65534), who runs relayd (owner root:root, mode 0600"
	out, code := e.run("check-config", "--as", "nobody", e.cfg)
	if code != 1 || !strings.Contains(out, want) || !strings.Contains(out, "chgrp nogroup "+secret+" && chmod g+r "+secret) {
		t.Errorf("check-config --as nobody: exit %d\n%s\nwant %q", code, out, want)
	}
	// The state directory's owner is the service user.
	os.MkdirAll(e.conf.StateDir, 0o700)
	os.Chown(e.conf.StateDir, 65534, 65534)
	out, code = e.run("check-config", e.cfg)
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("check-config with state_dir owned by nobody: exit %d\n%s\nwant %q", code, out, want)
	}
	// The configuration file itself, root:root 0600, is as closed to it.
	if !strings.Contains(out, "configuration file: "+e.cfg+" cannot be read by nobody (uid 65534)") {
		t.Errorf("check-config with state_dir owned by nobody does not name the configuration file:\n%s", out)
	}
	// Readable by its group, and the directories above searchable: ok.
	for _, f := range []string{secret, e.cfg} {
		os.Chown(f, 0, 65534)
		os.Chmod(f, 0o640)
	}
	for d := e.dir; d != "/"; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o001 == 0 {
			os.Chmod(d, fi.Mode().Perm()|0o011)
			defer os.Chmod(d, fi.Mode().Perm())
		}
	}
	if out, code := e.run("check-config", e.cfg); code != 0 || !strings.Contains(out, "files readable by nobody (uid 65534)") {
		t.Errorf("check-config with the secret root:nogroup 0640: exit %d\n%s", code, out)
	}
	if out, code := e.run("check-config", "--as", "no-such-user-relayd", e.cfg); code != 2 || !strings.Contains(out, `--as: user "no-such-user-relayd"`) {
		t.Errorf("check-config --as an unknown user: exit %d\n%s", code, out)
	}
}

// Every command prints its help on stdout with exit 0, through relayd
// help CMD, CMD -h and CMD --help alike, and lists its flags as its usage
// line writes them: --name for long flags, -c for one letter, each flag
// of the help in the usage line.
func TestHelpForEveryCommand(t *testing.T) {
	flagRe := regexp.MustCompile(`(?m)^  (-{1,2})([a-z][a-z-]*)`)
	for _, c := range commands {
		if c.name == "help" {
			continue
		}
		for _, args := range [][]string{{"help", c.name}, {c.name, "-h"}, {c.name, "--help"}} {
			cmd := exec.Command(relaydBin, args...)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			err := cmd.Run()
			name := "relayd " + strings.Join(args, " ")
			if err != nil || stderr.Len() > 0 || !strings.HasPrefix(stdout.String(), "usage: relayd "+c.name) {
				t.Errorf("%s: %v\nstdout: %s\nstderr: %s", name, err, stdout.String(), stderr.String())
				continue
			}
			for _, m := range flagRe.FindAllStringSubmatch(stdout.String(), -1) {
				want := "--" + m[2]
				if len(m[2]) == 1 {
					want = "-" + m[2]
				}
				if m[1]+m[2] != want {
					t.Errorf("%s lists %s%s, want %s", name, m[1], m[2], want)
				}
				if !regexp.MustCompile(regexp.QuoteMeta(want) + `\b`).MatchString(c.usage) {
					t.Errorf("%s lists %s, which its usage line %q does not", name, want, c.usage)
				}
			}
		}
	}
	// Arguments hash-password refuses are a usage error (exit 2), never
	// read as a password.
	cmd := exec.Command(relaydBin, "hash-password", "s3cret")
	out, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 2 || !strings.Contains(string(out), "takes no arguments") || !strings.Contains(string(out), "usage: relayd hash-password") {
		t.Errorf("relayd hash-password s3cret: exit %d %s", cmd.ProcessState.ExitCode(), out)
	}
}
