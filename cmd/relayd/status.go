package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/status"
)

// Nagios plugin exit codes.
const (
	nagiosOK       = 0
	nagiosWarning  = 1
	nagiosCritical = 2
	nagiosUnknown  = 3
)

func runStatus(args []string) error {
	fs := newFlagSet("status")
	cfgPath := configFlag(fs)
	socket := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print the status document as JSON")
	alive := fs.Bool("alive", false, "liveness check: exit 0 when the daemon answers, whatever its mailboxes' states, else 1")
	// A Nagios check's usage error is UNKNOWN (3), not CRITICAL (2).
	unknown := func(format string, a ...any) error {
		fmt.Printf("UNKNOWN: relayd status: "+format+"\n", a...)
		return exitError{nagiosUnknown}
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return unknown("%v (usage: relayd status [-c file] [--socket path] [--json | --alive])", err)
	}
	if fs.NArg() > 0 {
		return unknown("unexpected argument %q (usage: relayd status [-c file] [--socket path] [--json | --alive])", fs.Arg(0))
	}
	if *alive && *asJSON {
		return unknown("--alive and --json do not go together")
	}
	if *alive {
		return statusAlive(*cfgPath, *socket)
	}
	path := *socket
	var cfg *config.Config
	if path == "" {
		var err error
		if cfg, err = loadConfig(*cfgPath); err != nil {
			fmt.Fprintf(os.Stderr, "UNKNOWN: %v\n", err)
			return exitError{nagiosUnknown}
		}
		path = cfg.StatusSocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := status.NewClient(path).Status(ctx)
	if err != nil {
		fmt.Printf("UNKNOWN: %v\n", err)
		// Root and the service user read the state directory instead.
		if errors.Is(err, status.ErrNotRunning) && cfg != nil && !*asJSON && mayReadState(cfg.StateDir) {
			if err := offlineStatus(os.Stdout, cfg, time.Now()); err != nil {
				fmt.Printf("no offline view: %v\n", err)
			}
		}
		return exitError{nagiosUnknown}
	}
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		enc.Encode(st)
	} else {
		status.Render(os.Stdout, st, time.Now())
	}
	if code := nagiosCode(st); code != nagiosOK {
		return exitError{code}
	}
	return nil
}

// nagiosCode is the plugin exit code for st: CRITICAL when an admin must
// act on a mailbox or the spool cannot store mail, WARNING when a mailbox
// is degraded or warned about, or when mail of a removed account is still
// queued.
func nagiosCode(st *status.Status) int {
	code := nagiosOK
	if st.SpoolFailing != nil {
		code = nagiosCritical
	}
	for _, a := range st.Accounts {
		switch {
		case a.NeedsAttention():
			code = nagiosCritical
		case (a.State == health.StateDegraded || a.State == health.StateWarning || a.Warning != "") && code == nagiosOK:
			code = nagiosWarning
		}
	}
	if st.Orphaned > 0 && code == nagiosOK {
		code = nagiosWarning
	}
	for _, c := range st.Certificates {
		if c.ExpiresSoon && code == nagiosOK {
			code = nagiosWarning
		}
	}
	return code
}
