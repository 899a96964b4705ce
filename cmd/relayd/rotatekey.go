package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/status"
)

const rotateKeyMore = `Every grant file is rewritten under the new key (a generated one unless
--new-key names a file), by the running daemon through the status socket
(admin role) or, with relayd stopped, by this command; then key_file is
replaced. The new key waits in key_file.new meanwhile, and relayd accepts
it as well as the old one, so an interrupted rotation leaves every grant
readable: run rotate-key again and it resumes with key_file.new. With no
key_file yet, rotate-key creates it and encrypts the plain grants. Back up
the new key with the state directory. Exit 0 done, 1 a grant was left under
the old key (listed; key_file is unchanged), 3 not allowed.`

// runRotateKey rewrites every grant under a new key, then makes it
// key_file; see rotateKeyMore.
func runRotateKey(args []string) error {
	flags := newFlagSet("rotate-key")
	cfgPath := configFlag(flags)
	newKeyFile := flags.String("new-key", "", "use the key in `file` (32 random bytes, base64, one line) instead of a generated one")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	pending := cfg.KeyFile + auth.PendingSuffix
	var k *auth.Key
	switch {
	case *newKeyFile != "":
		if k, err = auth.ReadKeyFile(*newKeyFile); err != nil {
			return fmt.Errorf("--new-key: %w", err)
		}
	default:
		if k, err = auth.ReadKeyFile(pending); err == nil {
			fmt.Printf("resuming the rotation to the key in %s (key %s)\n", pending, k.ID())
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		} else if k, err = auth.GenerateKey(); err != nil {
			return err
		}
	}
	// The new key is on disk before any grant is written under it.
	if err := auth.WriteKeyFile(pending, k, keyGroup(cfg.KeyFile)); err != nil {
		if errors.Is(err, fs.ErrPermission) {
			return fmt.Errorf("%w (run relayd rotate-key as root)", err)
		}
		return err
	}
	armFailpointFromEnv(slog.New(slog.NewTextHandler(io.Discard, nil)))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	client := status.NewClient(cfg.StatusSocket)
	res, err := client.RotateKey(ctx, k)
	where := "the running daemon"
	switch {
	case errors.Is(err, status.ErrNotRunning):
		where = "relayd rotate-key (relayd is not running)"
		if res, err = rotateOffline(cfg, k); err != nil {
			return err
		}
	case err != nil:
		return err
	}
	for _, f := range res.Failed {
		fmt.Printf("account %s: left as it was: %s\n", f.Account, f.Error)
	}
	if len(res.Failed) > 0 {
		return fmt.Errorf("%d grant(s) could not be rewritten (above): key_file %s is unchanged and the new key waits in %s, both accepted; "+
			"restore the key those grants need or run 'relayd authorize NAME' for them, then run relayd rotate-key again", len(res.Failed), cfg.KeyFile, pending)
	}
	if err := os.Rename(pending, cfg.KeyFile); err != nil {
		return fmt.Errorf("every grant is under the new key, but replacing key_file failed: %w; move %s to %s by hand", err, pending, cfg.KeyFile)
	}
	if d, err := os.Open(dirOf(cfg.KeyFile)); err == nil {
		d.Sync()
		d.Close()
	}
	fmt.Printf("%d grant(s) rewritten by %s under key %s; %s now holds it: back it up with the state directory (grants are useless without it)\n",
		len(res.Rewritten), where, k.ID(), cfg.KeyFile)
	if st, err := client.Status(ctx); err == nil && strings.Contains(st.Encryption.Where, "credential") {
		fmt.Printf("relayd reads its key from a systemd credential: encrypt the new key into it (systemd-creds encrypt --name=%s %s /etc/credstore.encrypted/%s) before relayd restarts; until then relayd also accepts key_file\n",
			auth.CredentialName, cfg.KeyFile, auth.CredentialName)
	}
	return nil
}

// rotateOffline rewrites the grants in this process, with relayd stopped.
func rotateOffline(cfg *config.Config, k *auth.Key) (auth.RewriteResult, error) {
	keys, err := offlineKeys(cfg)
	if errors.Is(err, auth.ErrNoKeyFile) {
		keys, err = auth.PlainKeyring("key_file "+cfg.KeyFile), nil
	}
	if err != nil && keys == nil {
		return auth.RewriteResult{}, err
	}
	return (&auth.Store{Dir: cfg.StateDir, Keys: keys}).Rekey(k)
}

// offlineKeys loads the token store's keys for a command that uses the
// store itself: key_file (and a pending key) as this user can read them.
// Call it before dropToStateOwner: root reads the key, relayd's user
// writes the directory.
func offlineKeys(cfg *config.Config) (*auth.Keyring, error) {
	return auth.LoadKeyring(auth.KeyOptions{KeyFile: cfg.KeyFile, Explicit: cfg.KeyFileSet,
		CredentialsDir: os.Getenv("CREDENTIALS_DIRECTORY")})
}

// offlineStore is the token store for a command working without the
// daemon. With no key file, grants are plain, unless the store already
// holds encrypted ones (the key is elsewhere: a systemd credential), in
// which case nothing may be written in clear beside them. A key this user
// cannot read is an error saying who can.
func offlineStore(cfg *config.Config) (*auth.Store, error) {
	keys, err := offlineKeys(cfg)
	store := &auth.Store{Dir: cfg.StateDir, Keys: keys}
	switch {
	case errors.Is(err, auth.ErrNoKeyFile):
		store.Keys = auth.PlainKeyring("key_file " + cfg.KeyFile)
		names, _ := store.Names()
		for _, n := range names {
			if store.Encrypted(n) {
				return nil, fmt.Errorf("the grants in %s are encrypted, and key_file %s does not exist (is the key a systemd credential? then only the daemon can use it): start relayd, and run this again so that it goes through the daemon", cfg.StateDir, cfg.KeyFile)
			}
		}
	case err != nil:
		return nil, fmt.Errorf("cannot use the token store's key: %w; run this as root or as relayd's user, or start relayd so that it goes through the daemon", err)
	}
	return store, nil
}

// keyGroup is the group a key file gets: key_file's own when it exists,
// else group relayd, else none (-1).
func keyGroup(keyFile string) int {
	if fi, err := os.Stat(keyFile); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			return int(st.Gid)
		}
	}
	if g, err := user.LookupGroup("relayd"); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			return gid
		}
	}
	return -1
}

func dirOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i > 0 {
		return path[:i]
	}
	return "/"
}
