package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// notifications listens where relayd sends sd_notify messages.
func notifications(t *testing.T, dir string) (string, <-chan string) {
	t.Helper()
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	msgs := make(chan string, 100)
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := c.Read(b)
			if err != nil {
				return
			}
			msgs <- string(b[:n])
		}
	}()
	return path, msgs
}

func awaitNotify(t *testing.T, msgs <-chan string, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m := <-msgs:
			if strings.HasPrefix(m, prefix) {
				return m
			}
		case <-timeout:
			t.Fatalf("no %q from relayd", prefix)
		}
	}
}

// The real binary tells systemd it is ready (with its status), feeds the
// watchdog at half its interval, and says it is stopping.
func TestSystemdNotify(t *testing.T) {
	e := newEnv(t)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	sock, msgs := notifications(t, e.dir)
	d := e.serveEnv([]string{"NOTIFY_SOCKET=" + sock, "WATCHDOG_USEC=200000"})
	ready := awaitNotify(t, msgs, "READY=1")
	if !strings.Contains(ready, "STATUS=all 1 mailbox ok; 0 message(s) queued") {
		t.Errorf("READY without the status: %q", ready)
	}
	for range 3 {
		awaitNotify(t, msgs, "WATCHDOG=1")
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	awaitNotify(t, msgs, "STOPPING=1")
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("relayd did not stop")
	}
	if !strings.Contains(d.stderr.String(), "relayd stopped") {
		t.Errorf("the end of the shutdown is not logged:\n%s", d.stderr.String())
	}
}

// Socket activation: the listeners systemd passes are served, and relayd
// binds nothing of its own for that protocol.
func TestSocketActivation(t *testing.T) {
	e := newEnv(t)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f, _ := ln.(*net.TCPListener).File()
	ln.Close()
	// The configured address must stay unbound: relayd serves the passed one.
	configured := e.imapAddr
	cmd := exec.Command("/bin/sh", "-c", `LISTEN_PID=$$ exec "$0" serve -c "$1"`, relaydBin, e.cfg)
	cmd.Env = append(os.Environ(), "LISTEN_FDS=1", "LISTEN_FDNAMES=imap")
	cmd.ExtraFiles = []*os.File{f} // fd 3
	pr, pw, _ := os.Pipe()
	cmd.Stderr = pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	f.Close()
	started := make(chan string, 1)
	go func() {
		var log strings.Builder
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			log.WriteString(sc.Text() + "\n")
			if strings.Contains(sc.Text(), `msg="relayd started"`) {
				started <- log.String()
				return
			}
		}
		started <- log.String()
	}()
	var log string
	select {
	case log = <-started:
	case <-time.After(30 * time.Second):
		t.Fatal("relayd did not start")
	}
	passed := ln.Addr().String()
	if !strings.Contains(log, passed) {
		t.Fatalf("relayd does not say it serves %s:\n%s", passed, log)
	}
	e.imapAddr = passed
	c, err := e.login(localPassword)
	if err != nil {
		t.Fatalf("login on the passed socket = %v\n%s", err, log)
	}
	c.Close()
	if conn, err := net.Dial("tcp", configured); err == nil {
		conn.Close()
		t.Errorf("relayd also listens on the configured %s", configured)
	}
}
