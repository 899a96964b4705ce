package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/relayd/relayd/config"
)

const defaultConfig = "/etc/relayd/relayd.toml"

func newFlagSet(name string) *flag.FlagSet {
	fs := flag.NewFlagSet("relayd "+name, flag.ContinueOnError)
	return fs
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
		if err := fs.Parse(args); err != nil {
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
		return "", fmt.Errorf("expected exactly one %s", what)
	}
	return pos[0], nil
}
