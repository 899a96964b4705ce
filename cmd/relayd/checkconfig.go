package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/relayd/relayd/config"
)

const checkConfigMore = `Besides what serve refuses, check-config fails on what would only fail
later: placeholders left from the example file (client_id, tenant,
addresses, the example's local_password_hash), a Gmail account without
client_secret_file, scopes the account's protocols refuse. It warns
about an office365 account without tenant (AADSTS50194 for a
single-tenant app registration), and about a missing key_file (grants
stored unencrypted); a key_file set but missing, unreadable by the
service user, or open to others is a problem. Files are checked as the user relayd
runs as: the owner of state_dir, or --as USER. Exit 0 ok (warnings
allowed), 1 a problem, 2 a usage error.`

func runCheckConfig(args []string) error {
	fs := newFlagSet("check-config")
	as := fs.String("as", "", "check that `user` (default: the owner of state_dir, else relayd) can read the files the configuration names")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	path := defaultConfig
	if len(pos) == 1 {
		path = pos[0]
	} else if len(pos) > 1 {
		return usagef("expected at most one configuration file")
	}
	cfg, err := loadConfig(path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return exitError{1}
	}
	svc := config.ServiceUserOf(cfg.StateDir)
	if *as != "" {
		if svc, err = config.LookupServiceUser(*as); err != nil {
			return usagef("--as: %v", err)
		}
	}
	for _, w := range cfg.ModeWarnings(path) {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	}
	problems := 0
	if err := config.CheckConfigReadableBy(path, svc); err != nil && !errors.Is(err, os.ErrNotExist) {
		fmt.Fprintf(os.Stderr, "%v (relayd serve refuses to start until this is fixed)\n", err)
		problems++
	}
	if w, err := cfg.CheckKeyFile(svc); w != "" {
		fmt.Fprintf(os.Stderr, "warning: %s\n", w)
	} else if err != nil {
		fmt.Fprintln(os.Stderr, err)
		problems++
	}
	for _, err := range cfg.CheckFilesAs(svc) {
		// A file not in place yet is a warning: it may be put there
		// later. One the service user cannot read, or that others may
		// change, is wrong whoever looks.
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(os.Stderr, "warning: %v (relayd will not start until %s can read it)\n", err, svc)
			continue
		}
		fmt.Fprintf(os.Stderr, "%v (relayd serve refuses to start until this is fixed)\n", err)
		problems++
	}
	for _, p := range cfg.Lint() {
		if p.Warning {
			fmt.Fprintf(os.Stderr, "warning: %s\n", p)
			continue
		}
		fmt.Fprintln(os.Stderr, p)
		problems++
	}
	if len(cfg.Accounts) == 0 {
		fmt.Fprintf(os.Stderr, "%s: no [[account]]: relayd serve refuses to start without one\n", path)
		problems++
	}
	if problems > 0 {
		fmt.Fprintf(os.Stderr, "%s: %d %s to fix, named above\n", path, problems, plural(problems, "problem", "problems"))
		return exitError{1}
	}
	fmt.Printf("%s: ok, %d account(s); files readable by %s\n", path, len(cfg.Accounts), svc)
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
