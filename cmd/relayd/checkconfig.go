package main

import (
	"errors"
	"fmt"
	"os"
)

func runCheckConfig(args []string) error {
	fs := newFlagSet("check-config")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	path := defaultConfig
	if fs.NArg() == 1 {
		path = fs.Arg(0)
	} else if fs.NArg() > 1 {
		return usagef("expected at most one configuration file")
	}
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitError{1}
	}
	for _, w := range cfg.ModeWarnings(path) {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	problems := 0
	for _, err := range cfg.CheckFiles() {
		// A file not in place yet, or not readable by whoever runs
		// check-config (relayd reads it as its own user), is a warning:
		// the file itself may be fine. A secret everyone may read is
		// wrong whoever looks.
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
			fmt.Fprintf(os.Stderr, "warning: %v (relayd will not start until it can read it)\n", err)
			continue
		}
		fmt.Fprintf(os.Stderr, "%v (relayd serve refuses to start until this is fixed)\n", err)
		problems++
	}
	if len(cfg.Accounts) == 0 {
		fmt.Fprintf(os.Stderr, "%s: no [[account]]: relayd serve refuses to start without one\n", path)
		problems++
	}
	if problems > 0 {
		return exitError{1}
	}
	fmt.Printf("%s: ok, %d account(s)\n", path, len(cfg.Accounts))
	return nil
}
