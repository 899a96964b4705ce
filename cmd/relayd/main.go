// Command relayd keeps legacy IMAP and SMTP software working against
// mailboxes that only accept OAuth 2.0: clients log in on localhost with a
// plain password, and relayd logs in upstream with XOAUTH2.
//
// Usage: relayd COMMAND [flags]; relayd help lists the commands.
package main

import (
	"errors"
	"fmt"
	"os"
)

type command struct {
	name, usage, summary string
	run                  func(args []string) error
}

var commands []command

func init() {
	commands = []command{
		{"serve", "serve [-c FILE]", "run the daemon", runServe},
		{"demo", "demo [--listen ADDR]", "run relayd against built-in fake servers, no accounts needed", runDemo},
		{"authorize", "authorize [-c FILE] NAME [--device | --browser | --refresh-token-file FILE]", "sign in (or import a grant) for account NAME", runAuthorize},
		{"queue", "queue [-c FILE] list|show|flush|hold|release|retry|delete", "inspect and manage the outbound queue", runQueue},
		{"status", "status [-c FILE | --socket PATH] [--json]", "show each mailbox's health; exits non-zero when one needs attention", runStatus},
		{"check-config", "check-config [FILE]", "validate a configuration file", runCheckConfig},
		{"hash-password", "hash-password", "read a password from stdin or a prompt and print its bcrypt hash", runHashPassword},
		{"version", "version", "print the version", runVersion},
	}
}

// exitError carries a specific exit status (relayd status uses Nagios's).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	if len(os.Args) < 2 || os.Args[1] == "help" || os.Args[1] == "-h" || os.Args[1] == "--help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(2)
		}
		return
	}
	for _, c := range commands {
		if c.name == os.Args[1] {
			err := c.run(os.Args[2:])
			var ee exitError
			if errors.As(err, &ee) {
				os.Exit(ee.code)
			}
			if err != nil {
				fmt.Fprintf(os.Stderr, "relayd %s: %v\n", c.name, err)
				os.Exit(1)
			}
			return
		}
	}
	fmt.Fprintf(os.Stderr, "relayd: unknown command %q\n\n", os.Args[1])
	usage()
	os.Exit(2)
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: relayd COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(os.Stderr, "  %-60s %s\n", c.usage, c.summary)
	}
}
