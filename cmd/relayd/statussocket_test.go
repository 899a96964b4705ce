package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// With status_socket naming a file that is not a socket (a mistyped
// path), relayd refuses to start, names the path, and leaves the file as
// it was.
func TestServeRefusesFileAtStatusSocket(t *testing.T) {
	e := newEnv(t)
	e.conf.StatusSocket = e.cfg // the configuration file itself
	e.writeConfig()
	before, err := os.ReadFile(e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, relaydBin, "serve", "-c", e.cfg).CombinedOutput()
	e.record("relayd serve", out)
	if ctx.Err() != nil {
		t.Fatalf("relayd serve was still running after 60s; want it to refuse to start:\n%s", out)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("relayd serve = %v, want a failure:\n%s", err, out)
	}
	if !strings.Contains(string(out), e.cfg+" is a regular file, not a socket") {
		t.Errorf("relayd serve's error does not name the path and what is there:\n%s", out)
	}
	if after, err := os.ReadFile(e.cfg); err != nil || string(after) != string(before) {
		t.Errorf("the file at status_socket after relayd serve = %q, %v; want it untouched", after, err)
	}
}
