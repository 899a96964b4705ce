package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/relayd/relayd/status"
)

// runWebLogin asks the running daemon for a one-time link to the web
// console and prints it. The link's session has the caller's role on the
// status socket: an admin's for root, relayd's user and admin_group, a
// read-only one for group relayd.
func runWebLogin(args []string) error {
	fs := newFlagSet("web-login")
	cfgPath := configFlag(fs)
	socket := socketFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("web-login takes no arguments")
	}
	path, err := socketPath(*cfgPath, *socket)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wl, err := status.NewClient(path).WebLogin(ctx)
	switch {
	case errors.Is(err, status.ErrConsoleOff):
		return err
	case errors.Is(err, status.ErrNotRunning):
		return fmt.Errorf("%w: the web console is served by the running daemon (systemctl start relayd)", err)
	case err != nil:
		return err
	}
	mins := int(time.Until(wl.Expires).Round(time.Minute) / time.Minute)
	article := "a"
	if wl.Role == "admin" {
		article = "an"
	}
	fmt.Fprintf(os.Stdout, "Open this link within %d minutes; it works once and starts %s %s session of relayd's web console:\n\n  %s\n\n",
		mins, article, wl.Role, wl.URL)
	if wl.LoopbackOnly {
		_, port, _ := net.SplitHostPort(wl.Listen)
		fmt.Fprintf(os.Stdout, "The console listens on %s, on this machine only. From another machine, forward the port first:\n\n"+
			"  ssh -L %s:%s %s\n\nthen open the link there (replace the address with localhost:%s if your port differs).\n",
			wl.Listen, port, wl.Listen, sshTarget(), port)
	}
	return nil
}
