package main

import (
	"strings"
	"testing"
)

// relayd status --alive answers whether the daemon answers, not how its
// mailboxes are: a mailbox that was never authorized makes status
// critical (2) while the liveness check passes (0); a daemon that is gone
// fails it with 1, Docker's and podman's "unhealthy".
func TestStatusAlive(t *testing.T) {
	e := newEnv(t)
	d := e.serve()
	if out, code := e.run("status", "-c", e.cfg); code != nagiosCritical {
		t.Fatalf("status of a never-authorized mailbox exited %d, want %d:\n%s", code, nagiosCritical, out)
	}
	out, code := e.run("status", "-c", e.cfg, "--alive")
	if code != 0 || !strings.Contains(out, "relayd is alive: the daemon answers on "+e.socket) {
		t.Errorf("status --alive while a mailbox needs attention = %d:\n%s", code, out)
	}
	if out, code := e.run("status", "--socket", e.socket, "--alive"); code != 0 {
		t.Errorf("status --socket --alive = %d:\n%s", code, out)
	}

	d.cmd.Process.Kill()
	<-d.exited
	out, code = e.run("status", "-c", e.cfg, "--alive")
	if code != 1 || !strings.Contains(out, "relayd is not alive: relayd is not running") {
		t.Errorf("status --alive with no daemon = %d, want 1:\n%s", code, out)
	}
	if out, code := e.run("status", "-c", e.dir+"/missing.toml", "--alive"); code != 1 {
		t.Errorf("status --alive with no configuration = %d, want 1:\n%s", code, out)
	}
}
