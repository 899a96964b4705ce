package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/queue"
)

// sendmailEnv is a relayd whose account "support" sends through smtpServer,
// with [sendmail] lines, and a copy of the binary (and of the
// configuration) that uid 65534 may run and read.
type sendmailEnv struct {
	*env
	bin       string // relayd, runnable by anybody
	nobodyCfg string
}

func newSendmailEnv(t *testing.T) *sendmailEnv {
	t.Helper()
	e := newEnv(t)
	os.Chmod(e.dir, 0o755)
	os.Chmod(filepath.Dir(e.dir), 0o755)
	s := &sendmailEnv{env: e, bin: filepath.Join(e.dir, "relayd"), nobodyCfg: filepath.Join(e.dir, "nobody.toml")}
	b, err := os.ReadFile(relaydBin)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(s.bin, b, 0o755)
	return s
}

// configure makes "support" send through smtpServer, with the [sendmail]
// table's lines, in the configuration and in nobody's copy of it.
func (s *sendmailEnv) configure(smtpServer string, sendmailLines ...string) {
	s.t.Helper()
	if smtpServer != "" {
		s.writeSMTPConfig(smtpServer, "100ms", "1s")
	}
	s.conf.Sendmail = sendmailLines
	s.writeConfig()
	os.WriteFile(s.nobodyCfg, []byte(s.conf.TOML()), 0o644)
}

// sendmail runs relayd sendmail with args and msg on stdin, as root or (uid
// 65534) nobody, and returns its stderr and exit status.
func (s *sendmailEnv) sendmail(asNobody bool, msg string, args ...string) (string, int) {
	s.t.Helper()
	cfg := s.cfg
	if asNobody {
		cfg = s.nobodyCfg
	}
	cmd := exec.Command(s.bin, append([]string{"sendmail", "-C", cfg}, args...)...)
	if asNobody {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	}
	cmd.Stdin = strings.NewReader(msg)
	out, err := cmd.CombinedOutput()
	s.record("relayd sendmail "+strings.Join(args, " "), out)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		s.t.Fatalf("relayd sendmail: %v", err)
	}
	return string(out), 0
}

// queued returns the daemon's queue, or the spool's when none runs.
func (s *sendmailEnv) queued() []*queue.Entry {
	s.t.Helper()
	out, code := s.run("queue", "-c", s.cfg, "--json", "list")
	var l []*queue.Entry
	if err := json.Unmarshal([]byte(out), &l); err != nil || code != 0 {
		s.t.Fatalf("relayd queue list: exit %d %v\n%s", code, err, out)
	}
	return l
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run relayd sendmail as another user")
	}
}

// sendmail: a message piped to relayd sendmail -t -i reaches a real
// Postfix; a user outside [sendmail] allow is refused with EX_NOPERM and
// nothing is queued, one inside it sends; bsd-mailx told to use
// relayd-sendmail delivers; with the daemon stopped, root's message lands in
// the maildrop and is delivered after the start, and nobody's gets
// EX_TEMPFAIL.
func TestSendmailPostfix(t *testing.T) {
	requireRoot(t)
	s := newSendmailEnv(t)
	dove := realserver.StartDovecot(t, s.idp, realserver.DovecotOptions{})
	pf := realserver.StartPostfix(t, dove)
	s.configure(pf.SubmissionAddr)
	if out, code := s.run("authorize", "-c", s.cfg, "support", "--refresh-token-file", s.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	d := s.serve()

	msg := "From: Support <" + mbox + ">\nTo: customer@example.net\nBcc: hidden@example.net\nSubject: from a script\n\nsent by relayd sendmail -t -i\n.\nthe dot above is text\n"
	if out, code := s.sendmail(false, msg, "-t", "-i"); code != 0 {
		t.Fatalf("relayd sendmail -t -i: exit %d\n%s\n%s", code, out, d.stderr.String())
	}
	if !pf.WaitSunk([]byte("the dot above is text"), 30*time.Second) {
		t.Fatalf("the message did not reach smtp-sink\npostfix log:\n%s\nrelayd log:\n%s", pf.Log(), d.stderr.String())
	}
	if sunk := string(pf.Sunk()); strings.Contains(sunk, "Bcc:") || !strings.Contains(sunk, "relayd sendmail, from userid 0") {
		t.Errorf("the delivered copy shows Bcc: or lacks relayd's Received: field:\n%s", sunk)
	}
	if !strings.Contains(pf.Log(), "to=<hidden@example.net>") {
		t.Errorf("the Bcc: recipient was not an envelope recipient:\n%s", pf.Log())
	}

	// Outside [sendmail] allow: refused before the message is read,
	// nothing queued.
	if out, code := s.sendmail(true, "Subject: no\n\nnot allowed\n", "-f", mbox, "customer@example.net"); code != 77 || !strings.Contains(out, "[sendmail] allow") {
		t.Errorf("relayd sendmail as nobody, outside the map: exit %d %q; want 77 (EX_NOPERM)", code, out)
	}
	if l := s.queued(); len(l) != 0 {
		t.Errorf("a refused message was queued: %+v", l)
	}

	// In the map (a reload applies it): nobody sends, through the
	// default account, with bsd-mailx.
	s.configure("", `default_account = "support"`, `allow = { "nobody" = ["support"] }`)
	if out, code := s.run("reload", "-c", s.cfg); code != 0 {
		t.Fatalf("reload: %s", out)
	}
	if out, code := s.sendmail(true, "Subject: yes\n\nnobody may send now\n", "-oi", "customer@example.net"); code != 0 {
		t.Fatalf("relayd sendmail as nobody, in the map: exit %d %q", code, out)
	}
	if !pf.WaitSunk([]byte("nobody may send now"), 30*time.Second) {
		t.Fatalf("nobody's message did not reach smtp-sink\n%s", d.stderr.String())
	}
	mailx := realserver.RequireBinary(t, "bsd-mailx", "bsd-mailx")
	wrapper := filepath.Join(s.dir, "relayd-sendmail")
	os.WriteFile(wrapper, []byte("#!/bin/sh\nexec "+s.bin+" sendmail -C "+s.cfg+" \"$@\"\n"), 0o755)
	rc := filepath.Join(s.dir, "mailrc")
	os.WriteFile(rc, []byte("set sendmail="+wrapper+"\n"), 0o644)
	cmd := exec.Command(mailx, "-n", "-s", "from mailx", "customer@example.net")
	cmd.Env = append(os.Environ(), "MAILRC="+rc, "HOME="+s.dir)
	cmd.Stdin = strings.NewReader("mailx through relayd sendmail\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("bsd-mailx: %v\n%s", err, out)
	}
	if !pf.WaitSunk([]byte("mailx through relayd sendmail"), 30*time.Second) {
		t.Fatalf("bsd-mailx's message did not reach smtp-sink\n%s", d.stderr.String())
	}

	// The daemon stopped: root's message waits in the maildrop,
	// nobody's is refused for now.
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
	out, code := s.sendmail(false, "Subject: later\n\nwritten while relayd was stopped\n", "-i", "customer@example.net")
	if code != 0 || !strings.Contains(out, "relayd is not running: the message waits in "+filepath.Join(s.conf.StateDir, "maildrop")) {
		t.Fatalf("relayd sendmail with the daemon stopped: exit %d %q", code, out)
	}
	if out, code := s.sendmail(true, "Subject: later\n\nnobody, while stopped\n", "-i", "customer@example.net"); code != 75 || !strings.Contains(out, "relayd is not running") {
		t.Errorf("relayd sendmail as nobody with the daemon stopped: exit %d %q; want 75 (EX_TEMPFAIL)", code, out)
	}
	d = s.serve()
	if !pf.WaitSunk([]byte("written while relayd was stopped"), 30*time.Second) {
		t.Fatalf("the maildrop's message was not delivered after the start\n%s", d.stderr.String())
	}
	d.waitLog(t, "maildrop: queued a message", 10*time.Second)
	if strings.Contains(string(pf.Sunk()), "nobody, while stopped") {
		t.Error("a refused message was delivered")
	}
	s.sweepSecrets()
}

// sendmail: a SIGKILL of relayd sendmail while it hands a message over
// (stdin still open) leaves no partial message, neither in the spool with
// the daemon running nor in the maildrop with the daemon stopped.
func TestSendmailKilledMidWrite(t *testing.T) {
	requireRoot(t)
	s := newSendmailEnv(t)
	dead, err := realserver.FreeAddr() // nothing listens: mail waits in the queue
	if err != nil {
		t.Fatal(err)
	}
	s.configure(dead)
	if out, code := s.run("authorize", "-c", s.cfg, "support", "--refresh-token-file", s.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	kill := func() {
		t.Helper()
		cmd := exec.Command(s.bin, "sendmail", "-C", s.cfg, "-i", "-f", mbox, "customer@example.net")
		stdin, _ := cmd.StdinPipe()
		stderr, _ := cmd.StderrPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Far more than the pipe and socket buffers hold: once this
		// write returns, relayd sendmail is streaming the message.
		fmt.Fprintf(stdin, "Subject: half\n\n%s", strings.Repeat("partial line of a message\n", 80<<10))
		cmd.Process.Signal(syscall.SIGKILL)
		rest, _ := io.ReadAll(bufio.NewReader(stderr))
		cmd.Wait()
		stdin.Close()
		s.record("killed relayd sendmail", rest)
	}

	d := s.serve()
	kill()
	d.waitLog(t, "sendmail socket: a message was not queued", 30*time.Second)
	if l := s.queued(); len(l) != 0 {
		t.Errorf("a killed relayd sendmail left a queued message: %+v", l)
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
	spool := filepath.Join(s.conf.StateDir, "queue")
	if left := listFiles(t, spool); len(left) != 0 {
		t.Errorf("the spool holds %q after the kill", left)
	}

	kill() // the daemon stopped: relayd sendmail writes to the maildrop
	left := listFiles(t, filepath.Join(s.conf.StateDir, "maildrop"))
	if len(left) != 1 || !strings.HasPrefix(left[0], "tmp.") {
		t.Errorf("the maildrop holds %q after the kill; want the one temporary file it was writing, which is no message", left)
	}
	d = s.serve()
	if l := s.queued(); len(l) != 0 {
		t.Errorf("the daemon queued a partial message from the maildrop: %+v", l)
	}
}

// listFiles lists the regular files in dir and its subdirectories, by
// name, but the spool's own records.
func listFiles(t *testing.T, dir string) []string {
	t.Helper()
	var l []string
	filepath.WalkDir(dir, func(path string, de os.DirEntry, err error) error {
		if err == nil && de.Type().IsRegular() && de.Name() != "lock" && !strings.HasSuffix(de.Name(), ".list") {
			l = append(l, de.Name())
		}
		return nil
	})
	return l
}

// relayd-sendmail (argv[0]) is relayd sendmail; its usage errors are
// sendmail's EX_USAGE.
func TestSendmailName(t *testing.T) {
	link := filepath.Join(t.TempDir(), "relayd-sendmail")
	if err := os.Symlink(relaydBin, link); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(link, "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "usage: relayd sendmail") {
		t.Errorf("relayd-sendmail --help: %v\n%s", err, out)
	}
	cmd := exec.Command(link, "-bs")
	out, err = cmd.CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 64 {
		t.Errorf("relayd-sendmail -bs: %v, want exit 64\n%s", err, out)
	}
}

// An edit that broke the configuration file (the daemon's reload refused
// it, so the daemon runs on) does not stop relayd sendmail: it finds the
// socket in what it can read and hands the message over; with the daemon
// stopped too it says both things, with EX_CONFIG.
func TestSendmailBrokenConfigDaemonRunning(t *testing.T) {
	requireRoot(t)
	s := newSendmailEnv(t)
	s.configure("127.0.0.1:9", `default_account = "support"`)
	d := s.serve()
	b, _ := os.ReadFile(s.cfg)
	os.WriteFile(s.cfg, append(b, []byte("\nbroken_key = true\n")...), 0o600)
	msg := "From: " + mbox + "\nTo: someone@example.net\nSubject: broken config\n\nstill sent\n"
	if out, code := s.sendmail(false, msg, "-t", "-i"); code != 0 {
		t.Fatalf("relayd sendmail with a broken configuration and a running daemon: exit %d\n%s", code, out)
	}
	os.WriteFile(s.cfg, b, 0o600) // for relayd queue list
	if l := s.queued(); len(l) != 1 {
		t.Errorf("%d messages queued, want 1", len(l))
	}
	os.WriteFile(s.cfg, append(b, []byte("\nbroken_key = true\n")...), 0o600)
	d.cmd.Process.Signal(syscall.SIGTERM)
	<-d.exited
	out, code := s.sendmail(false, msg, "-t", "-i")
	if code != 78 || !strings.Contains(out, "relayd is not running") || !strings.Contains(out, "broken_key") {
		t.Errorf("with the daemon stopped too: exit %d\n%s", code, out)
	}
}
