package daemon

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/internal/testkit"
)

// The tail writer keeps the last bytes written, never more than its
// size, whatever the sizes of the writes.
func TestTailWriterBounded(t *testing.T) {
	const size = 2000
	w := newTailWriter(size)
	var all bytes.Buffer
	rnd := rand.New(rand.NewPCG(1, 2))
	for all.Len() < 50<<20 {
		n := rnd.IntN(3 * size)
		if rnd.IntN(100) == 0 {
			n = 1 << 20 // now and then a big write
		}
		p := make([]byte, n)
		for i := range p {
			p[i] = byte('a' + rnd.IntN(26))
		}
		if got, err := w.Write(p); got != n || err != nil {
			t.Fatalf("Write(%d bytes) = %d, %v", n, got, err)
		}
		all.Write(p)
		if len(w.buf) > size || cap(w.buf) != size {
			t.Fatalf("after %d bytes the tail writer holds %d bytes in a buffer of %d; want at most %d", all.Len(), len(w.buf), cap(w.buf), size)
		}
		if all.Len() < 10*size {
			if want := all.Bytes()[max(0, all.Len()-size):]; !bytes.Equal(w.Bytes(), want) {
				t.Fatalf("after %d bytes: kept %q, want the last %d bytes", all.Len(), w.Bytes(), len(want))
			}
		}
	}
	if want := all.Bytes()[all.Len()-size:]; !bytes.Equal(w.Bytes(), want) {
		t.Fatalf("after 50 MB the kept bytes are not the last %d", size)
	}
	if s := w.String(); utf8.RuneCountInString(s) > safetext.Max || !strings.HasPrefix(s, "…") || !strings.HasSuffix(s, string(all.Bytes()[all.Len()-10:])) {
		t.Errorf("String() = %q: want the last %d characters after \"…\"", s, safetext.Max-1)
	}
}

// A hook that prints 50 MB costs relayd no more than a hook that prints a
// line: only the end of its output is kept, and logged.
func TestHookOutputBounded(t *testing.T) {
	td, runs, _ := startHookDaemon(t, `head -c 50000000 /dev/zero | tr '\0' y; echo; echo "the end"; exit 3`, "1m")
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	td.d.runHook("support", health.Transition{Account: "support", Old: health.StateOK, New: health.StateDegraded})
	runtime.ReadMemStats(&after)
	if r := awaitHook(t, runs); r.err == nil {
		t.Fatal("the hook's exit 3 was not reported")
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
		t.Errorf("running a hook that prints 50 MB allocated %d MB: its output is buffered", alloc>>20)
	}
	m := regexp.MustCompile(`msg="on_state_change hook failed".* exit=3 output="([^"]*)"`).FindStringSubmatch(td.logs.String())
	if m == nil {
		t.Fatalf("no log line for the failed hook with its output:\n%.2000s", td.logs.String())
	}
	if out := m[1]; !strings.HasPrefix(out, "…") || !strings.HasSuffix(out, "yyy the end") || utf8.RuneCountInString(out) > safetext.Max {
		t.Errorf("logged output %q: want the last %d characters, ending with the end", out, safetext.Max)
	}
}

// A hook of one account that hangs (until its hook_timeout) does not make
// the hooks of other accounts wait.
func TestHooksOfAccountsRunSideBySide(t *testing.T) {
	dir := t.TempDir()
	started, release := filepath.Join(dir, "started"), filepath.Join(dir, "release")
	for _, f := range []string{started, release} {
		if err := syscall.Mkfifo(f, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hook := filepath.Join(dir, "hook")
	script := `#!/bin/sh
if [ "$RELAYD_ACCOUNT" = support ]; then
	echo started > "$1/started"
	read x < "$1/release"
fi
`
	if err := os.WriteFile(hook, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	pwFile := filepath.Join(dir, "sales.pw")
	os.WriteFile(pwFile, []byte("upstream-pw\n"), 0o600)
	runs := make(chan hookRun, 10)
	td := startDaemon(t, func(c *testkit.Config, o *Options) {
		c.Health = []string{fmt.Sprintf("on_state_change = [%q, %q]", hook, dir), `hook_timeout = "1h"`}
		c.Accounts = append(c.Accounts, testkit.Account{Name: "sales", Provider: "password", Email: "sales@example.com",
			PasswordFile: pwFile, IMAPServer: c.Accounts[0].IMAPServer, Security: "none", Direction: "incoming",
			LocalUser: "sales", LocalPasswordHash: c.Accounts[0].LocalPasswordHash})
		o.OnHook = func(tr health.Transition, err error) { runs <- hookRun{tr, err} }
	})
	// However the test ends, the hanging hook is let go.
	t.Cleanup(func() {
		if f, err := os.OpenFile(release, os.O_RDWR, 0); err == nil {
			f.WriteString("go\n")
			f.Close()
		}
	})

	go td.d.runHook("support", health.Transition{Account: "support", Old: health.StateOK, New: health.StateNeedsReauth, Reason: "first"})
	gotStarted := make(chan []byte, 1)
	go func() { b, _ := os.ReadFile(started); gotStarted <- b }() // returns once the hook wrote
	testkit.Await(t, gotStarted, "start of support's hook", 20*time.Second, func([]byte) bool { return true })

	go td.d.runHook("sales", health.Transition{Account: "sales", Old: health.StateOK, New: health.StateNeedsAdmin, Reason: "second"})
	r := testkit.Await(t, runs, "run of sales' hook while support's hangs", 20*time.Second, func(r hookRun) bool { return r.t.Account == "sales" })
	if r.err != nil {
		t.Errorf("sales' hook: %v", r.err)
	}

	f, err := os.OpenFile(release, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("go\n")
	f.Close()
	r = testkit.Await(t, runs, "end of support's hook", 20*time.Second, func(r hookRun) bool { return r.t.Account == "support" })
	if r.err != nil {
		t.Errorf("support's hook: %v", r.err)
	}
}
