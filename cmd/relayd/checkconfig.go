package main

import (
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
	for _, err := range cfg.CheckFiles() {
		fmt.Fprintf(os.Stderr, "warning: %v (relayd will not start until it can read it)\n", err)
	}
	fmt.Printf("%s: ok, %d account(s)\n", path, len(cfg.Accounts))
	return nil
}
