package daemon

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/relayd/relayd/health"
)

// runHook runs on_state_change for one transition of account a: the
// command without a shell, its environment only PATH and the RELAYD_*
// variables (nothing of relayd's own, which may hold credentials), killed
// with its process group after hook_timeout. A failure is logged and
// changes nothing else. Transitions reach it in order per account.
func (d *Daemon) runHook(name string, t health.Transition) {
	cfg := d.config()
	argv := cfg.Health.OnStateChange
	a := cfg.Account(name)
	if len(argv) == 0 || a == nil {
		return
	}
	d.hookMu.Lock() // one hook at a time: transitions arrive in order
	defer d.hookMu.Unlock()
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
		"RELAYD_REASON=" + string(t.Reason),
		"RELAYD_ADVICE=" + oneLine(t.Advice),
	}
	cmd.Dir = "/"
	cmd.Stdin = nil
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
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
			log.Error("on_state_change hook failed", "exit", ee.ExitCode(), "output", tail(out.String()))
		} else {
			log.Error("on_state_change hook could not run: check the path and that it is executable", "err", err)
		}
	default:
		log.Info("on_state_change hook ran", "took", time.Since(start).Round(time.Millisecond))
	}
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// tail is the end of a hook's output, for the log.
func tail(s string) string {
	s = strings.TrimSpace(s)
	if len(s) > 500 {
		s = "…" + s[len(s)-500:]
	}
	return s
}

var _ = os.Getpid
