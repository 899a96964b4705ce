package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"syscall"

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
			printFlags(w, fs)
		}
	}
	return fs
}

// printFlags lists fs's flags as the usage lines and the man page write
// them: --name for a long flag, -c for a one-letter one (the flag package
// takes either form; its PrintDefaults would show -name).
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		dash := "--"
		if len(f.Name) == 1 {
			dash = "-"
		}
		line := "  " + dash + f.Name
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		switch def := f.DefValue; {
		case def == "" || def == "false" || def == "0" || def == "0s":
		case fmt.Sprintf("%T", f.Value) == "*flag.stringValue":
			fmt.Fprintf(w, " (default %q)", def)
		default:
			fmt.Fprintf(w, " (default %v)", def)
		}
		fmt.Fprintln(w)
	})
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

// socketFlag is --socket, the status socket of the commands that talk to
// the running daemon.
func socketFlag(fs *flag.FlagSet) *string {
	return fs.String("socket", "", "status socket `path` (default: status_socket from the configuration)")
}

// socketPath is socket when given, else the configuration's
// status_socket.
func socketPath(cfgPath, socket string) (string, error) {
	if socket != "" {
		return socket, nil
	}
	cfg, err := loadConfig(cfgPath)
	if err != nil {
		return "", err
	}
	return cfg.StatusSocket, nil
}

func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.Load(path)
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// newLogger logs to stderr as the configuration says. Under systemd, whose
// journal keeps stderr (JOURNAL_STREAM names it), the journal adds the time
// and reads the priority from a "<N>" prefix (sd-daemon(3)).
func newLogger(cfg *config.Config) *slog.Logger {
	return slog.New(logHandler(os.Stderr, cfg.LogFormat, cfg.LogLevel, journalStream(os.Stderr)))
}

func logHandler(w io.Writer, format string, level slog.Leveler, journal bool) slog.Handler {
	opts := &slog.HandlerOptions{Level: level}
	if journal {
		w = priorityWriter{w}
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		}
	}
	if format == "json" {
		return &lazyAttrs{h: slog.NewJSONHandler(w, opts)}
	}
	return &lazyAttrs{h: slog.NewTextHandler(w, opts)}
}

// journalStream reports whether f is the stream systemd's journal reads:
// JOURNAL_STREAM is "DEVICE:INODE" of it (systemd.exec(5)).
func journalStream(f *os.File) bool {
	js := os.Getenv("JOURNAL_STREAM")
	if js == "" {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && js == fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// priorityWriter puts the syslog priority of each line's level in front of
// it: a handler writes one record per Write, with the level first once the
// time is left out.
type priorityWriter struct{ w io.Writer }

func (p priorityWriter) Write(b []byte) (int, error) {
	prio := "<6>"
	s := string(b[:min(len(b), 32)])
	switch {
	case strings.Contains(s, "DEBUG"):
		prio = "<7>"
	case strings.Contains(s, "WARN"):
		prio = "<4>"
	case strings.Contains(s, "ERROR"):
		prio = "<3>"
	}
	if _, err := io.WriteString(p.w, prio); err != nil {
		return 0, err
	}
	return p.w.Write(b)
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

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			set = true
		}
	})
	return set
}
