package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/relayd/relayd/status"
)

// runReload asks the running daemon to reload its configuration and waits
// for the result: ExecReload=relayd reload makes systemctl reload report a
// broken file, which kill -HUP cannot.
func runReload(args []string) error {
	fs := newFlagSet("reload")
	cfgPath := configFlag(fs)
	socket := socketFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("reload takes no arguments")
	}
	path, err := socketPath(*cfgPath, *socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := status.NewClient(path).Reload(ctx); err != nil {
		return fmt.Errorf("not reloaded, the old configuration stays in force: %w", err)
	}
	fmt.Fprintln(os.Stdout, "configuration reloaded")
	return nil
}
