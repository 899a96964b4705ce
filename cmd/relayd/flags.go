package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/relayd/relayd/config"
)

const defaultConfig = "/etc/relayd/relayd.toml"

// helpWanted is set when the command line asks for help (-h, --help,
// relayd help CMD): the help then goes to stdout and relayd exits 0.
var helpWanted bool

// usageError is a mistake on the command line: relayd prints the usage on
// stderr and exits 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// newFlagSet returns the flags of command name, whose usage (from the
// command table) and flags make its help.
func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("relayd "+name, flag.ContinueOnError)
	if helpWanted {
		fs.SetOutput(os.Stdout)
	}
	fs.Usage = func() {
		w := fs.Output()
		if c := lookup(name); c != nil {
			fmt.Fprintf(w, "usage: relayd %s\n\n%s\n", c.usage, c.summary)
			if c.more != "" {
				fmt.Fprintf(w, "\n%s\n", c.more)
			}
		}
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nflags:")
			fs.PrintDefaults()
		}
	}
	return fs
}

// parseFlags parses args; a bad flag is a usageError (the flag package
// has printed it and the usage).
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	return nil
}

func configFlag(fs *flag.FlagSet) *string {
	return fs.String("c", defaultConfig, "configuration `file`")
}

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

func newLogger(level slog.Level) *slog.Logger {
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
}

// parseInterleaved parses flags that may come after positional arguments
// (relayd authorize NAME --refresh-token-file F).
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlags(fs, args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func oneName(pos []string, what string) (string, error) {
	if len(pos) != 1 {
		return "", usagef("expected exactly one %s", what)
	}
	return pos[0], nil
}
