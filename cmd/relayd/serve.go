package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coreos/go-systemd/v22/activation"
	sddaemon "github.com/coreos/go-systemd/v22/daemon"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/daemon"
	"github.com/relayd/relayd/internal/fault"
)

func runServe(args []string) error {
	fs := newFlagSet("serve")
	cfgPath := configFlag(fs)
	grace := fs.Duration("grace", 0, "how long shutdown lets sessions and deliveries finish (default: shutdown_grace from the configuration)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *grace > 0 {
		cfg.ShutdownGrace = *grace
	}
	if len(cfg.Accounts) == 0 {
		return fmt.Errorf("%s has no [[account]]: add one (relayd check-config checks the file)", *cfgPath)
	}
	if errs := cfg.CheckFiles(); len(errs) > 0 {
		return fmt.Errorf("%s: %w", *cfgPath, errors.Join(errs...))
	}
	level := new(slog.LevelVar)
	level.Set(cfg.LogLevel)
	log := slog.New(logHandler(os.Stderr, cfg.LogFormat, level, journalStream(os.Stderr)))
	armFailpointFromEnv(log)
	opts := daemon.Options{Logger: log, ConfigPath: *cfgPath, LogLevel: level}
	if err := activatedListeners(cfg, &opts); err != nil {
		return err
	}
	d, err := daemon.New(cfg, opts)
	if err != nil {
		return err
	}
	return runUntilSignal(d, cfg.ShutdownGrace, log)
}

// activatedListeners sets the listeners systemd passed (socket activation:
// LISTEN_FDS, LISTEN_FDNAMES "imap", "pop3", "smtp", and "imaps", "pop3s",
// "smtps" for implicit TLS) in opts. They replace the configured addresses of their
// kind and obey the same rule: beyond loopback only with the protocol's
// tls_cert.
func activatedListeners(cfg *config.Config, opts *daemon.Options) error {
	byName, err := activation.ListenersWithNames()
	if err != nil {
		return fmt.Errorf("socket activation: %w", err)
	}
	for name, lns := range byName {
		for _, ln := range lns {
			if ln == nil {
				continue
			}
			var dst *[]net.Listener
			var l *config.ListenerTLS
			switch name {
			case "imap":
				dst, l = &opts.IMAPListeners, &cfg.IMAP.ListenerTLS
			case "pop3":
				dst, l = &opts.POP3Listeners, &cfg.POP3.ListenerTLS
			case "smtp":
				dst, l = &opts.SMTPListeners, &cfg.SMTP.ListenerTLS
			case "imaps":
				dst, l = &opts.IMAPTLSListeners, &cfg.IMAP.ListenerTLS
			case "pop3s":
				dst, l = &opts.POP3TLSListeners, &cfg.POP3.ListenerTLS
			case "smtps":
				dst, l = &opts.SMTPTLSListeners, &cfg.SMTP.ListenerTLS
			default:
				return fmt.Errorf("socket activation: unknown socket name %q (FileDescriptorName= must be imap, pop3, smtp, imaps, pop3s or smtps)", name)
			}
			table := strings.TrimSuffix(name, "s")
			if strings.HasSuffix(name, "s") && !l.HasCert() {
				return fmt.Errorf("socket activation: %s listener %s: implicit TLS needs %s.tls_cert and %s.tls_key", name, ln.Addr(), table, table)
			}
			if err := config.CheckLoopback(ln.Addr().String()); err != nil && !l.HasCert() {
				return fmt.Errorf("socket activation: %s listener %s: %v: a listener beyond loopback needs TLS: set %s.tls_cert and %s.tls_key", name, ln.Addr(), err, table, table)
			}
			*dst = append(*dst, ln)
		}
	}
	return nil
}

// runUntilSignal starts d, tells systemd it is ready, keeps its STATUS=
// current and its watchdog fed while the daemon's core answers, and shuts
// it down on SIGINT or SIGTERM (a second one exits at once).
func runUntilSignal(d *daemon.Daemon, grace time.Duration, log *slog.Logger) error {
	d.Start()
	status := statusLine(d)
	sddaemon.SdNotify(false, sddaemon.SdNotifyReady+"\nSTATUS="+status)
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sig)
	tick := time.NewTicker(15 * time.Second)
	defer tick.Stop()
	var watchdog <-chan time.Time
	if every, err := sddaemon.SdWatchdogEnabled(false); err == nil && every > 0 {
		t := time.NewTicker(every / 2)
		defer t.Stop()
		watchdog = t.C
	}
	for {
		select {
		case s := <-sig:
			if s == syscall.SIGHUP {
				reload(d, log)
				continue
			}
			return shutdown(d, grace, log, sig)
		case <-tick.C:
			if st := statusLine(d); st != status {
				status = st
				sddaemon.SdNotify(false, "STATUS="+status)
			}
		case <-watchdog:
			// Fed only while the daemon's core answers: a wedged daemon
			// is restarted by systemd.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := d.Alive(ctx)
			cancel()
			if err != nil {
				log.Error("not feeding the watchdog: the daemon's core does not answer", "err", err)
				continue
			}
			sddaemon.SdNotify(false, sddaemon.SdNotifyWatchdog)
		}
	}
}

// statusLine is systemd's STATUS=: the banner and the queue's size.
func statusLine(d *daemon.Daemon) string {
	st := d.Status()
	queued := 0
	for _, a := range st.Accounts {
		if a.Queue != nil {
			queued += a.Queue.Queued + a.Queue.Held
		}
	}
	return fmt.Sprintf("%s; %d message(s) queued", st.Banner, queued)
}

// shutdown stops d within grace; a second signal exits at once.
func shutdown(d *daemon.Daemon, grace time.Duration, log *slog.Logger, sig <-chan os.Signal) error {
	sddaemon.SdNotify(false, sddaemon.SdNotifyStopping)
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	done := make(chan struct{})
	go func() { d.Shutdown(ctx); close(done) }()
	for {
		select {
		case <-done:
			return nil
		case s := <-sig:
			if s == syscall.SIGHUP {
				continue
			}
			log.Warn("second signal during shutdown: exiting now; queued mail stays on disk")
			os.Exit(1)
		}
	}
}

// reload is SIGHUP's: the daemon logs the outcome.
func reload(d *daemon.Daemon, log *slog.Logger) {
	log.Info("SIGHUP: reloading the configuration")
	d.Reload()
}

// armFailpointFromEnv arms the fault registry (package internal/fault)
// from RELAYD_FAILPOINT=NAME[:N]: the process kills itself with SIGKILL the
// Nth time it passes the fault point NAME ("after-write",
// "after-sync", "after-upstream-250", ...). For the crash test only.
func armFailpointFromEnv(log *slog.Logger) {
	spec := os.Getenv("RELAYD_FAILPOINT")
	if spec == "" {
		return
	}
	name, count, _ := strings.Cut(spec, ":")
	n, err := strconv.Atoi(count)
	if err != nil || n < 1 {
		n = 1
	}
	log.Warn("crash-test failpoint armed: relayd will kill itself", "failpoint", name, "hit", n)
	var hits atomic.Int64
	fault.Arm(func(p string) {
		if p == name && hits.Add(1) == int64(n) {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
		}
	})
}
