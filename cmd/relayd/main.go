// Command relayd keeps legacy IMAP and SMTP software working against
// mailboxes that only accept OAuth 2.0: clients log in on localhost with a
// plain password, and relayd logs in upstream with XOAUTH2.
//
// Usage: relayd COMMAND [flags]; relayd help lists the commands.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/relayd/relayd/status"
)

type command struct {
	name, usage, summary string
	// more is the help's text after the summary, when there is more to say.
	more string
	run  func(args []string) error
}

var commands []command

// hidden are commands no help lists: helpers for the shell completions.
var hidden = map[string]func(args []string) int{}

func init() {
	commands = []command{
		{"serve", "serve [-c FILE] [--grace DURATION]", "run the daemon", "", runServe},
		{"demo", "demo [--listen ADDR] [--smtp-listen ADDR] [--web-listen ADDR]", "run relayd against built-in fake servers, no accounts needed", "", runDemo},
		{"authorize", "authorize [-c FILE] NAME [--device | --browser | --refresh-token-file FILE] [--progress-interval DURATION]", "sign in (or import a grant) for account NAME", "", runAuthorize},
		{"queue", "queue [-c FILE] [--json] list|show|flush|hold|release|retry|delete [ARG]", "inspect and manage the outbound queue", queueCommands, runQueue},
		{"reload", "reload [-c FILE | --socket PATH]", "make the running daemon reload its configuration; exits 1 with the reason when the file is refused", "", runReload},
		{"status", "status [-c FILE | --socket PATH] [--json | --alive]", "show each mailbox's health; exits 1 (warning) or 2 (critical) when one needs attention, 3 when relayd is not running", statusMore, runStatus},
		{"check-config", "check-config [--as USER] [FILE]", "validate a configuration file, and what would fail only later (placeholders, scopes, files the service user cannot read)", checkConfigMore, runCheckConfig},
		{"doctor", "doctor [-c FILE | --socket PATH] [NAME] [--json] [--timeout DURATION] [--send-test]", "check each account end to end (files, DNS, TLS, token endpoint, clock, grant, scopes, logins) and say how to fix what fails; exits 1 on warnings, 2 on a failure", doctorMore, runDoctor},
		{"web-login", "web-login [-c FILE | --socket PATH]", "print a one-time link (10 minutes, single use) to the web console, with your role on the status socket: admin or read-only", "", runWebLogin},
		{"rotate-key", "rotate-key [-c FILE] [--new-key FILE]", "rewrite every grant under a new key (generated, or from --new-key), with relayd running or stopped, then replace key_file", rotateKeyMore, runRotateKey},
		{"sendmail", sendmailUsage, "queue a message read on stdin, as sendmail(8) does, for scripts and cron jobs (also run as relayd-sendmail)", sendmailMore, runSendmail},
		{"hash-password", "hash-password", "read a password from stdin or a prompt and print its bcrypt hash", "", runHashPassword},
		{"version", "version", "print the version, commit and Go version", "", runVersion},
		{"help", "help [COMMAND]", "print help about relayd or a command", "", nil},
	}
}

// lookup returns the command named name, or nil.
func lookup(name string) *command {
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// exitError carries a specific exit status (relayd status uses Nagios's).
type exitError struct{ code int }

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

func main() {
	// Programs that want one executable path for sendmail run relayd as
	// relayd-sendmail (the packages' /usr/sbin/relayd-sendmail), or as
	// sendmail where an admin linked it so.
	switch filepath.Base(os.Args[0]) {
	case "relayd-sendmail", "sendmail":
		os.Exit(run(append([]string{"sendmail"}, os.Args[1:]...)))
	}
	os.Exit(run(os.Args[1:]))
}

// run runs the command line and returns the exit status: 0 success (and
// help), 1 failure, 2 a usage error, or the command's own (status).
func run(args []string) int {
	if len(args) == 0 {
		usage(os.Stderr)
		return 2
	}
	if h := hidden[args[0]]; h != nil {
		return h(args[1:])
	}
	switch args[0] {
	case "-h", "--help", "-help":
		usage(os.Stdout)
		return 0
	case "--version", "-version", "-V":
		runVersion(nil)
		return 0
	case "help":
		if len(args) == 1 {
			usage(os.Stdout)
			return 0
		}
		if args[1] == "help" || args[1] == "-h" || args[1] == "--help" {
			usage(os.Stdout)
			return 0
		}
		c := lookup(args[1])
		if c == nil || c.run == nil {
			fmt.Fprintf(os.Stderr, "relayd help: unknown command %q\n\n", args[1])
			usage(os.Stderr)
			return 2
		}
		args = []string{args[1], "-h"}
	}
	c := lookup(args[0])
	if c == nil || c.run == nil {
		fmt.Fprintf(os.Stderr, "relayd: unknown command %q\n\n", args[0])
		usage(os.Stderr)
		return 2
	}
	for _, a := range args[1:] {
		if a == "-h" || a == "--help" || a == "-help" {
			helpWanted = true
		}
	}
	err := c.run(args[1:])
	var ee exitError
	var ue usageError
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, status.ErrPermission):
		fmt.Fprintf(os.Stderr, "relayd %s: %v\n", c.name, err)
		return 3
	case errors.As(err, &ue):
		if !strings.HasPrefix(ue.Error(), "flag provided but not defined") && !strings.Contains(ue.Error(), "invalid value") &&
			!strings.Contains(ue.Error(), "flag needs an argument") {
			fmt.Fprintf(os.Stderr, "relayd %s: %v\n", c.name, ue)
			fmt.Fprintf(os.Stderr, "usage: relayd %s\n", c.usage)
		}
		return 2
	default:
		fmt.Fprintf(os.Stderr, "relayd %s: %v\n", c.name, err)
		return 1
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: relayd COMMAND [flags]\n\ncommands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nrelayd help COMMAND (or relayd COMMAND -h) shows a command's usage and flags.")
}
