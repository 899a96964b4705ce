package daemon

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

func writeKey(t *testing.T, path string) *auth.Key {
	t.Helper()
	k, err := auth.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.WriteKeyFile(path, k, -1); err != nil {
		t.Fatal(err)
	}
	return k
}

// The first start with a key encrypts the plain grant the store held,
// and the account works from it; status says the store is encrypted.
// A restart with another key in key_file makes the account needs_admin
// grant_undecryptable, leaves the file's bytes as they were, and the
// right key brings it back.
func TestDaemonKeyMigrationAndWrongKey(t *testing.T) {
	keyFile := filepath.Join(t.TempDir(), "relayd.key")
	k := writeKey(t, keyFile)
	td := startDaemon(t, func(c *testkit.Config, _ *Options) { c.KeyFile = keyFile })
	cfg := td.d.config()
	grantFile := filepath.Join(cfg.StateDir, "support.json")
	before, err := os.ReadFile(grantFile)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(before, []byte(`"kid":"`+k.ID()+`"`)) || bytes.Contains(before, []byte("refresh_token")) {
		t.Fatalf("grant file after the first start with a key:\n%s\nwant it encrypted under %s", before, k.ID())
	}
	if err := td.imapLogin(); err != nil {
		t.Fatalf("IMAP login from the migrated grant = %v", err)
	}
	if e := td.d.Status().Encryption; !e.Enabled || e.KeyID != k.ID() || e.Warning != "" {
		t.Errorf("status encryption = %+v", e)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	td.d.Shutdown(ctx)
	before, _ = os.ReadFile(grantFile)

	writeKey(t, keyFile) // a wrong key
	d, err := New(cfg, td.d.opts)
	if err != nil {
		t.Fatalf("New with a wrong key = %v, want a running daemon", err)
	}
	d.Start()
	st := d.Status()
	if a := st.Accounts[0]; a.State != health.StateNeedsAdmin || a.Reason != health.ReasonGrantUndecryptable ||
		!bytes.Contains([]byte(a.Advice), []byte("key_file")) || !bytes.Contains([]byte(a.Advice), []byte(k.ID())) {
		t.Errorf("account with a wrong key: %s %s %q", a.State, a.Reason, a.Advice)
	}
	if _, err := d.accounts.Get("support").Tokens.Token(ctx); health.AsError(err) == nil || health.AsError(err).Reason != health.ReasonGrantUndecryptable {
		t.Errorf("Token() with an undecryptable grant = %v, want grant_undecryptable", err)
	}
	d.Shutdown(ctx)
	after, _ := os.ReadFile(grantFile)
	if !bytes.Equal(before, after) {
		t.Errorf("grant file changed under a wrong key:\nbefore %s\nafter  %s", before, after)
	}

	auth.WriteKeyFile(keyFile, k, -1)
	d, err = New(cfg, td.d.opts)
	if err != nil {
		t.Fatal(err)
	}
	d.Start()
	defer d.Shutdown(ctx)
	if a := d.Status().Accounts[0]; a.State.NeedsAttention() {
		t.Errorf("with the right key back: %s %s", a.State, a.Reason)
	}
	if _, err := d.accounts.Get("support").Tokens.Refresh(ctx, ""); err != nil {
		t.Errorf("refresh with the right key back = %v", err)
	}
}

// No key file at all (key_file not set): grants stay plain and status
// warns.
func TestDaemonNoKeyFileWarns(t *testing.T) {
	td := startDaemon(t, func(c *testkit.Config, _ *Options) { c.KeyFile = "" })
	e := td.d.Status().Encryption
	if _, err := os.Stat("/etc/relayd/relayd.key"); err == nil {
		t.Skip("/etc/relayd/relayd.key exists on this machine")
	}
	if e.Enabled || !bytes.Contains([]byte(e.Warning), []byte("rotate-key")) {
		t.Errorf("status encryption without a key file = %+v, want a warning naming rotate-key", e)
	}
}
