package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/relayd/relayd/internal/daemon"
)

func runVersion(args []string) error {
	if len(args) > 0 {
		if err := parseFlags(newFlagSet("version"), args); err != nil {
			return err
		}
	}
	fmt.Println(versionString())
	return nil
}

// versionString is "relayd VERSION (commit REV, go VERSION)", from what the
// build set, else from the module's build info.
func versionString() string {
	version, commit := daemon.Version, daemon.Commit
	if bi, ok := debug.ReadBuildInfo(); ok {
		if version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && commit == "" {
				commit = s.Value
				if len(commit) > 12 {
					commit = commit[:12]
				}
			}
			if s.Key == "vcs.modified" && s.Value == "true" && commit != "" {
				commit += "-dirty"
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("relayd %s (commit %s, %s)", version, commit, runtime.Version())
}
