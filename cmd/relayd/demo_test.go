package main

import (
	"bufio"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/realserver"
)

// The read commands relayd demo prints work as printed with the real curl:
// their output shows the demo's messages (a FETCH given with curl's -X
// printed only the literals' sizes, since curl drops IMAP literals).
func TestDemoReadCommandsShowMail(t *testing.T) {
	realserver.RequireBinary(t, "curl", "curl")
	cmd := exec.Command(relaydBin, "demo", "--listen", "127.0.0.1:0", "--smtp-listen", "127.0.0.1:0", "--web-listen", "127.0.0.1:0")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })

	// The instructions come once the listeners are open; read up to their
	// last line, then keep draining so the demo never blocks on stdout.
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	var curls []string
	var printed strings.Builder
	timeout := time.After(60 * time.Second)
	for done := false; !done; {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("relayd demo ended before its instructions were complete:\n%s", printed.String())
			}
			printed.WriteString(l + "\n")
			if c, ok := strings.CutPrefix(l, "  curl "); ok {
				curls = append(curls, "curl "+c)
			}
			done = strings.HasPrefix(l, "Press Ctrl-C")
		case <-timeout:
			t.Fatalf("relayd demo printed no instructions within 60s:\n%s", printed.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	if strings.Contains(printed.String(), "-X 'FETCH") {
		t.Errorf("the demo still prints a FETCH through curl -X, whose output shows no subjects:\n%s", printed.String())
	}
	if len(curls) < 2 {
		t.Fatalf("the demo prints %d curl commands, want one for the subjects and one for a message:\n%s", len(curls), printed.String())
	}
	want := [][]string{
		{"Subject: Welcome to relayd", "Subject: Your ticket #4711 was updated"},
		{"Subject: Welcome to relayd", "relayd logged in there for you"},
	}
	for i, c := range curls[:2] {
		out, err := exec.Command("sh", "-c", c).CombinedOutput()
		if err != nil {
			t.Errorf("%s: %v\n%s", c, err, out)
			continue
		}
		for _, w := range want[i] {
			if !strings.Contains(string(out), w) {
				t.Errorf("%s printed no %q:\n%s", c, w, out)
			}
		}
	}
	// The web console's link opens the demo's mailbox.
	link := linkRE.FindString(printed.String())
	if link == "" {
		t.Fatalf("the demo prints no web console link:\n%s", printed.String())
	}
	if _, page := openLink(t, link); !strings.Contains(page, "demo@example.com") {
		t.Errorf("the demo's console page:\n%s", page)
	}
}
