package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/relayd/relayd/internal/daemon"
)

func runServe(args []string) error {
	fs := newFlagSet("serve")
	cfgPath := configFlag(fs)
	grace := fs.Duration("grace", 30*time.Second, "how long shutdown waits for sessions to end")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	d, err := daemon.New(cfg, daemon.Options{Logger: log, Failpoint: failpointFromEnv(log)})
	if err != nil {
		return err
	}
	return runUntilSignal(d, *grace)
}

// runUntilSignal starts d, tells systemd it is ready, and shuts it down on
// SIGINT or SIGTERM.
func runUntilSignal(d *daemon.Daemon, grace time.Duration) error {
	d.Start()
	banner := d.Status().Banner
	sddaemon.SdNotify(false, sddaemon.SdNotifyReady+"\nSTATUS="+banner)
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	// systemctl status shows the banner: keep it current.
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
wait:
	for {
		select {
		case <-sig:
			break wait
		case <-tick.C:
			if b := d.Status().Banner; b != banner {
				banner = b
				sddaemon.SdNotify(false, "STATUS="+banner)
			}
		}
	}
	signal.Stop(sig)
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	d.Shutdown(ctx)
	return nil
}

// failpointFromEnv arms a crash-test failpoint from RELAYD_FAILPOINT=NAME[:N]:
// the process kills itself with SIGKILL the Nth time it passes NAME
// ("after-temp-write", "after-rename", "after-upstream-250"). For tests
// only.
func failpointFromEnv(log *slog.Logger) func(string) {
	spec := os.Getenv("RELAYD_FAILPOINT")
	if spec == "" {
		return nil
	}
	name, count, _ := strings.Cut(spec, ":")
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		n = 1
	}
	log.Warn("crash-test failpoint armed: relayd will kill itself", "failpoint", name, "hit", n)
	var hits atomic.Int64
	return func(p string) {
		if p == name && hits.Add(1) == int64(n) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	}
}
