package config

import (
	"os"
	"strings"
	"testing"
)

// FuzzParse reads arbitrary configuration files: Parse returns a
// configuration or an error, never panics, and a configuration it accepts
// has every account named and reachable by its name.
func FuzzParse(f *testing.F) {
	if b, err := os.ReadFile("../config.example.toml"); err == nil {
		f.Add(string(b))
	}
	for _, s := range []string{
		"",
		"state_dir = \"/var/lib/relayd\"\n[[accounts]]\nname = \"support\"\nprovider = \"office365\"\nemail = \"support@example.com\"\nclient_id = \"x\"\n",
		"[imap]\nlisten = [\"127.0.0.1:1143\", \"127.0.0.1:1143\"]\n",
		"[[accounts]]\nname = \"a\"\nprovider = \"office356\"\n",
		"log_level = 3\n[smtp]\nmax_message_size = -1\nretry_min = \"1x\"\n",
		"[[accounts]]\nname = \"\\u202e\"\nprovider = \"password\"\npassword_file = \"/x\"\nsmtp_server = \"h:25\"\n",
		"a = [1, \"x\"\nb = {",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, doc string) {
		cfg, err := Parse(doc)
		if err != nil {
			if strings.TrimSpace(err.Error()) == "" {
				t.Fatalf("an empty error for %q", doc)
			}
			return
		}
		for _, name := range cfg.AccountNames() {
			if cfg.Account(name) == nil {
				t.Fatalf("account %q listed but not found", name)
			}
		}
	})
}
