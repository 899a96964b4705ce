package daemon

import (
	"context"
	"errors"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
)

// hookOutputKept is how much of a hook's output is kept: the end of it,
// which is what the log shows (safetext.Max characters) when the hook
// fails.
const hookOutputKept = 4 * safetext.Max

// runHook runs on_state_change for one transition of account a: the
// command without a shell, its environment only PATH and the RELAYD_*
// variables (nothing of relayd's own, which may hold credentials, and no
// value longer than safetext.Max characters), killed with its process
// group after hook_timeout. A failure is logged with the end of the
// output, of which no more is kept, and changes nothing else. Transitions
// reach it in order per account; the hooks of one account run one at a
// time, those of different accounts side by side.
func (d *Daemon) runHook(name string, t health.Transition) {
	cfg := d.config()
	argv := cfg.Health.OnStateChange
	a := cfg.Account(name)
	if len(argv) == 0 || a == nil {
		return
	}
	defer d.hooks.lock(name)()
	log := d.log.With("account", a.Name, "hook", argv[0], "old_state", t.Old, "new_state", t.New)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Health.HookTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"RELAYD_ACCOUNT=" + a.Name,
		"RELAYD_EMAIL=" + a.Email,
		"RELAYD_OLD_STATE=" + string(t.Old),
		"RELAYD_NEW_STATE=" + string(t.New),
		"RELAYD_REASON=" + safetext.Line(string(t.Reason)),
		"RELAYD_ADVICE=" + safetext.Line(t.Advice),
	}
	cmd.Dir = "/"
	cmd.Stdin = nil
	out := newTailWriter(hookOutputKept)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = time.Second
	start := time.Now()
	err := cmd.Run()
	if d.opts.OnHook != nil {
		defer func() { d.opts.OnHook(t, err) }()
	}
	switch {
	case ctx.Err() != nil:
		log.Error("on_state_change hook killed after hook_timeout; check that it does not hang", "timeout", cfg.Health.HookTimeout)
	case err != nil:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			log.Error("on_state_change hook failed", "exit", ee.ExitCode(), "output", out.String())
		} else {
			log.Error("on_state_change hook could not run: check the path and that it is executable", "err", err)
		}
	default:
		log.Info("on_state_change hook ran", "took", time.Since(start).Round(time.Millisecond))
	}
}

// hookLocks lets the hooks of one account run one at a time (an account
// removed and added again by reloads may have two conditions telling
// transitions), without making other accounts' hooks wait.
type hookLocks struct {
	mu    sync.Mutex
	locks map[string]*hookLock
}

type hookLock struct {
	sync.Mutex
	users int // holders and waiters; at 0 the lock is forgotten
}

// lock waits until no hook of account name runs and returns the function
// that lets the next one run.
func (l *hookLocks) lock(name string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*hookLock{}
	}
	k := l.locks[name]
	if k == nil {
		k = &hookLock{}
		l.locks[name] = k
	}
	k.users++
	l.mu.Unlock()
	k.Lock()
	return func() {
		k.Unlock()
		l.mu.Lock()
		if k.users--; k.users == 0 {
			delete(l.locks, name)
		}
		l.mu.Unlock()
	}
}

// tailWriter keeps the last bytes written to it, at most its size: a hook
// that prints 500 MB costs no more memory than one that prints a line.
// Safe for use from several goroutines (os/exec copies stdout and stderr
// on goroutines of their own when they are different writers).
type tailWriter struct {
	mu    sync.Mutex
	buf   []byte // a ring of len size once full
	next  int    // where the next byte goes, once full
	total int64  // bytes written
}

func newTailWriter(size int) *tailWriter {
	return &tailWriter{buf: make([]byte, 0, size)}
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	w.total += int64(n)
	size := cap(w.buf)
	if len(p) >= size {
		w.buf = append(w.buf[:0], p[len(p)-size:]...)
		w.next = 0
		return n, nil
	}
	if room := size - len(w.buf); room > 0 {
		k := min(room, len(p))
		w.buf = append(w.buf, p[:k]...)
		p = p[k:]
	}
	for len(p) > 0 {
		k := copy(w.buf[w.next:], p)
		p = p[k:]
		w.next = (w.next + k) % size
	}
	return n, nil
}

// Bytes returns the bytes kept, oldest first.
func (w *tailWriter) Bytes() []byte {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append(append([]byte(nil), w.buf[w.next:]...), w.buf[:w.next]...)
}

// String is the end of the output for the log: at most safetext.Max
// characters, control characters escaped, "…" in front when cut.
func (w *tailWriter) String() string {
	s := safetext.Tail(string(w.Bytes()), safetext.Max)
	w.mu.Lock()
	cut := w.total > int64(cap(w.buf))
	w.mu.Unlock()
	if cut && (s == "" || []rune(s)[0] != '…') {
		s = "…" + s
	}
	return s
}
