package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// check-config and serve refuse a state_dir that others may write to, or
// that sits in a directory others may write to (OpenSSH's StrictModes),
// and name the chmod that fixes it.
func TestStateDirOthersMayWriteIsRefused(t *testing.T) {
	e := newEnv(t)
	state := e.conf.StateDir
	os.MkdirAll(state, 0o700)
	parent := filepath.Join(filepath.Dir(state))
	for _, tc := range []struct{ name, dir string }{
		{"state_dir 0777", state},
		{"directory above 0777", parent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fi, _ := os.Stat(tc.dir)
			os.Chmod(tc.dir, 0o777)
			defer os.Chmod(tc.dir, fi.Mode().Perm())
			want := "chmod go-w " + tc.dir + "'"
			out, code := e.run("check-config", e.cfg)
			if code != 1 || !strings.Contains(out, "state_dir: ") || !strings.Contains(out, want) {
				t.Errorf("check-config: exit %d\n%s\nwant a refusal with %q", code, out, want)
			}
			out, code = e.run("serve", "-c", e.cfg)
			if code == 0 || !strings.Contains(out, want) {
				t.Errorf("serve: exit %d\n%s\nwant a refusal with %q", code, out, want)
			}
		})
	}
	if out, code := e.run("check-config", e.cfg); code != 0 {
		t.Errorf("check-config with state_dir 0700 again: exit %d\n%s", code, out)
	}
}
