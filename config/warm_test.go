package config

import (
	"strings"
	"testing"
	"time"
)

// warm_connections: a default in [imap], an account's own value, 0 to turn
// them off, and the provider's pre-login timeout the pool replaces them by.
func TestWarmConnections(t *testing.T) {
	acct := func(name, extra string) string {
		return "[[account]]\nname = \"" + name + "\"\nprovider = \"custom\"\nemail = \"" + name + "@example.com\"\nclient_id = \"c\"\n" +
			"token_url = \"http://127.0.0.1/token\"\nimap_server = \"127.0.0.1:993\"\nsmtp_server = \"127.0.0.1:587\"\nlocal_password_hash = \"" + hash + "\"\n" + extra
	}
	for _, tc := range []struct {
		name, doc string
		a, b      int
	}{
		{"default", acct("a", "") + acct("b", ""), 1, 1},
		{"[imap] default", "[imap]\nwarm_connections = 3\n" + acct("a", "") + acct("b", "warm_connections = 0\n"), 3, 0},
		{"account's own", acct("a", "warm_connections = 2\n") + acct("b", ""), 2, 1},
	} {
		cfg, err := Parse(tc.doc)
		if err != nil {
			t.Fatalf("%s: Parse() = %v, want nil", tc.name, err)
		}
		if a, b := cfg.Account("a").WarmConnections, cfg.Account("b").WarmConnections; a != tc.a || b != tc.b {
			t.Errorf("%s: warm_connections %d and %d, want %d and %d", tc.name, a, b, tc.a, tc.b)
		}
	}
	for _, doc := range []string{"[imap]\nwarm_connections = -1\n" + acct("a", ""), acct("a", "warm_connections = 11\n")} {
		if _, err := Parse(doc); err == nil || !strings.Contains(err.Error(), "warm_connections: ") {
			t.Errorf("Parse(%q) = %v, want a warm_connections error", doc, err)
		}
	}
	cfg, err := Parse(good)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Account("support").UpstreamPreauthTimeout; got != time.Minute {
		t.Errorf("office365's pre-login timeout = %v, want Exchange's 60 s", got)
	}
}
