package main

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// submit sends one message through relayd's submission listener and
// returns the final reply's error (nil for 250).
func (e *smtpEnv) submit(subject string) error {
	e.t.Helper()
	c, err := smtp.Dial(e.smtpAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "helpdesk", localPassword)); err != nil {
		return err
	}
	return c.SendMail(mbox, []string{"customer@example.net"},
		strings.NewReader("Subject: "+subject+"\r\n\r\nbody of "+subject+"\r\n"))
}

// arrivedOnce waits until the upstream has the message with subject, and
// fails unless it came exactly once.
func (e *smtpEnv) arrivedOnce(subject string, d *daemonProc) {
	e.t.Helper()
	want := []byte("Subject: " + subject + "\r\n")
	count := func() int {
		n := 0
		for _, m := range e.smtpUp.Messages() {
			if bytes.Contains(m.Data, want) {
				n++
			}
		}
		return n
	}
	deadline := time.After(30 * time.Second)
	for count() == 0 {
		select {
		case <-e.smtpUp.Arrived():
		case <-deadline:
			e.t.Fatalf("%q never reached the upstream:\n%s", subject, d.stderr.String())
		}
	}
	if n := count(); n != 1 {
		e.t.Errorf("%q reached the upstream %d times, want once", subject, n)
	}
}

// The state directory turns read-only under the running daemon (a file
// system remounted read-only after an error, a mistaken chmod): relayd
// answers submissions 452 4.3.1 and says why in its log and in relayd
// status (CRITICAL: the spool cannot store mail), keeps running, and takes
// mail again as soon as the directory is writable, with no restart.
//
// CI runs as root, whom permissions do not stop: relayd then runs as an
// unprivileged user (setpriv) owning the state directory, and the test
// takes the write permission off every directory in it. A read-only bind
// mount cannot stand in: the kernel refuses to make a mount read-only
// (EBUSY) while a process holds a file on it open for writing, as relayd
// holds its spool lock.
func TestStateDirReadOnly(t *testing.T) {
	e := newSMTPEnv(t, "")
	state := e.conf.StateDir
	if os.Geteuid() == 0 {
		e.wrap = unprivileged(t, e.dir)
	}
	d := e.start()
	chmodDirs := func(mode os.FileMode) {
		t.Helper()
		err := filepath.WalkDir(state, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.IsDir() {
				err = os.Chmod(p, mode)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := e.submit("before"); err != nil {
		t.Fatalf("submission with a writable state directory: %v", err)
	}
	e.arrivedOnce("before", d)
	// A message waiting for its retry as the directory turns read-only.
	e.smtpUp.FailData(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "later"})
	if err := e.submit("queued before"); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, "delivery deferred", 10*time.Second)

	chmodDirs(0o500)
	// Its retry needs a new access token, whose rotated grant cannot be
	// stored, and is delivered; its files cannot be removed yet.
	e.idp.RevokeAccessTokens(mbox)
	e.smtpUp.FailData(nil)
	e.arrivedOnce("queued before", d)
	d.waitLog(t, "could not store the refreshed grant", 10*time.Second)
	d.waitLog(t, "delivered message could not be removed from the spool; relayd keeps trying", 10*time.Second)
	err := e.submit("read-only")
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("submission with a read-only state directory = %v, want 452 4.3.1", err)
	}
	d.waitLog(t, "permission denied", 10*time.Second)
	// relayd status: CRITICAL, saying the spool cannot store mail (the
	// accounts themselves are ok).
	if out, code := e.run("status", "--socket", e.socket); code != nagiosCritical || !strings.Contains(out, "the spool cannot store mail") {
		t.Errorf("status with a read-only state directory: exit %d\n%s", code, out)
	}

	chmodDirs(0o700)
	d.waitLog(t, "delivered message removed from the spool", 10*time.Second)
	if err := e.submit("after"); err != nil {
		t.Fatalf("submission once the state directory is writable again: %v", err)
	}
	e.arrivedOnce("after", d)
	if n := len(e.smtpUp.Messages()); n != 3 {
		t.Errorf("the upstream has %d messages, want 3", n)
	}
	if out, code := e.run("status", "--socket", e.socket); code != nagiosOK {
		t.Errorf("status once a message was stored again: exit %d\n%s", code, out)
	}
	// The grant refreshed while the directory was read-only is stored now
	// that it is writable (the delivery's token use tried again): its
	// rotated refresh token survives a restart.
	d.waitLog(t, "the refreshed grant is stored now", 30*time.Second)
	// Restart (SIGKILL, as a crash would): with every access token
	// revoked, the next delivery needs the stored refresh token, which
	// must be the rotated one.
	d.cmd.Process.Kill()
	<-d.exited
	e.idp.RevokeAccessTokens(mbox)
	d = e.start()
	if err := e.submit("after a restart"); err != nil {
		t.Fatal(err)
	}
	e.arrivedOnce("after a restart", d)
}

// unprivileged gives dir (the test's directory: configuration, secrets,
// state) to nobody (65534), opens the directories above it for search,
// and returns the wrap that runs relayd as nobody.
func unprivileged(t *testing.T, dir string) []string {
	t.Helper()
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	err = filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err == nil {
			err = os.Lchown(p, 65534, 65534)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for p := filepath.Dir(dir); p != "/tmp" && p != "/"; p = filepath.Dir(p) {
		os.Chmod(p, 0o711)
	}
	return []string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}
}

// SIGSTOP, then SIGCONT (a VM paused, a debugger, a suspended container):
// a client that connected while relayd was stopped gets its greeting and
// its 250 afterwards, the message goes out once, status is OK, and relayd
// does not fire a burst of retries (each message is delivered once) or
// expire what it holds.
//
// The stop lasts RELAYD_FAULT_STOP (default 3s; the 2 minutes is
// RELAYD_FAULT_STOP=2m). A shorter stop shows the same: relayd's timers
// run on the monotonic clock, which keeps counting while a process is
// stopped, so on SIGCONT every timer that fell due during the stop fires
// once, whatever the length; 3 s outlasts the test's retry delays (50 ms to
// 200 ms), so the timers that would fall due in 2 minutes with the default
// delays fall due here too.
func TestSIGSTOPThenSIGCONT(t *testing.T) {
	stop := 3 * time.Second
	if s := os.Getenv("RELAYD_FAULT_STOP"); s != "" {
		var err error
		if stop, err = time.ParseDuration(s); err != nil {
			t.Fatalf("RELAYD_FAULT_STOP=%q: %v", s, err)
		}
	}
	e := newSMTPEnv(t, "")
	d := e.start()
	if err := e.submit("before the stop"); err != nil {
		t.Fatal(err)
	}
	e.arrivedOnce("before the stop", d)

	// A message the upstream refuses for now, so that its retry timer
	// falls due during the stop.
	e.smtpUp.FailData(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	if err := e.submit("retried across the stop"); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, "delivery deferred", 10*time.Second)

	if err := d.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	procState := func() string {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(d.cmd.Process.Pid) + "/stat")
		// pid (comm) STATE ...
		if i := bytes.LastIndexByte(b, ')'); i >= 0 && len(b) > i+2 {
			return string(b[i+2])
		}
		return "?"
	}
	// The stop takes effect as each of relayd's threads next runs: wait
	// for the kernel to report the process stopped before the client
	// comes.
	for deadline := time.Now().Add(10 * time.Second); procState() != "T"; {
		if time.Now().After(deadline) {
			t.Fatalf("relayd not stopped 10 s after SIGSTOP: state %s", procState())
		}
		runtime.Gosched()
	}
	during := make(chan error, 1)
	go func() { during <- e.submit("sent during the stop") }()
	e.smtpUp.FailData(nil)
	time.Sleep(stop) // the fault itself: how long relayd stays stopped
	select {
	case err := <-during:
		t.Fatalf("a submission finished while relayd was stopped (state %s): %v\n%s", procState(), err, d.stderr.String())
	default:
	}
	if err := d.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := <-during; err != nil {
		t.Fatalf("the submission made during the stop, after SIGCONT: %v", err)
	}
	e.arrivedOnce("retried across the stop", d)
	e.arrivedOnce("sent during the stop", d)
	if out, code := e.run("status", "--socket", e.socket); code != nagiosOK {
		t.Errorf("status after SIGCONT: exit %d\n%s", code, out)
	}
	if got := len(e.smtpUp.Messages()); got != 3 {
		t.Errorf("the upstream has %d messages, want 3 (each once)", got)
	}
}
