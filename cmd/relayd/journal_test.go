package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Under systemd the journal keeps stderr (JOURNAL_STREAM names it): lines
// carry the syslog priority and no timestamp of relayd's own.
func TestJournalFormat(t *testing.T) {
	e := newEnv(t)
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := w.Stat()
	st := fi.Sys().(*syscall.Stat_t)
	cmd := exec.Command(relaydBin, "serve", "-c", e.cfg)
	cmd.Env = append(os.Environ(), fmt.Sprintf("JOURNAL_STREAM=%d:%d", st.Dev, st.Ino))
	cmd.Stderr = w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	timeout := time.After(30 * time.Second)
	var seen []string
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("relayd ended:\n%s", strings.Join(seen, "\n"))
			}
			seen = append(seen, l)
			if !strings.HasPrefix(l, "<") || strings.Contains(l, "time=") {
				t.Fatalf("journal line %q: want a <N> priority and no timestamp", l)
			}
			if strings.Contains(l, `msg="relayd started"`) {
				if !strings.HasPrefix(l, "<6>level=INFO ") {
					t.Errorf("info line %q, want <6>", l)
				}
				return
			}
		case <-timeout:
			t.Fatalf("no start line:\n%s", strings.Join(seen, "\n"))
		}
	}
}
