package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCheckKeyFile(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "relayd.key")
	good := "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n" // 32 bytes
	for _, c := range []struct {
		name       string
		content    string // "" : no file
		mode       os.FileMode
		explicit   bool
		warn, fail string
	}{
		{name: "default missing", warn: "grants are stored unencrypted"},
		{name: "explicit missing", explicit: true, fail: "does not exist"},
		{name: "ok", content: good, mode: 0o640},
		{name: "others may read", content: good, mode: 0o644, fail: "mode 0644"},
		{name: "not a key", content: "hello\n", mode: 0o640, fail: "holds no relayd key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			os.Remove(key)
			if c.content != "" {
				os.WriteFile(key, []byte(c.content), c.mode)
				os.Chmod(key, c.mode)
			}
			cfg := Defaults()
			cfg.KeyFile, cfg.KeyFileSet = key, c.explicit
			w, err := cfg.CheckKeyFile(nil)
			if c.warn != "" && !strings.Contains(w, c.warn) || c.warn == "" && w != "" {
				t.Errorf("warning = %q, want %q", w, c.warn)
			}
			if c.fail != "" && (err == nil || !strings.Contains(err.Error(), c.fail) || !strings.HasPrefix(err.Error(), "key_file")) ||
				c.fail == "" && err != nil {
				t.Errorf("error = %v, want %q", err, c.fail)
			}
		})
	}
}
