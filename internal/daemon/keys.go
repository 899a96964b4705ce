package daemon

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/status"
)

// openStore returns the token store with its keys (auth.LoadKeyring:
// $CREDENTIALS_DIRECTORY/relayd.key, else key_file), after encrypting the
// grants still in plain files. A key that cannot be loaded never stops
// the daemon: the grants it cannot open are their accounts'
// grant_undecryptable, and status says why.
func (d *Daemon) openStore(cfg *config.Config) *auth.Store {
	keys, err := auth.LoadKeyring(auth.KeyOptions{KeyFile: cfg.KeyFile, Explicit: cfg.KeyFileSet,
		CredentialsDir: os.Getenv("CREDENTIALS_DIRECTORY")})
	store := &auth.Store{Dir: cfg.StateDir, Keys: keys}
	switch {
	case errors.Is(err, auth.ErrNoKeyFile):
		store.Keys = auth.PlainKeyring("key_file " + cfg.KeyFile)
		d.keyWarning = fmt.Sprintf("grants are stored unencrypted: key_file %s does not exist; run 'relayd rotate-key' to create it and encrypt them", cfg.KeyFile)
		d.log.Warn("grants are stored unencrypted: no key file", "key_file", cfg.KeyFile,
			"fix", "run 'relayd rotate-key' (the packages create the key on install)")
		return store
	case err != nil:
		d.keyWarning = fmt.Sprintf("no key to encrypt grants with (%v): encrypted grants cannot be read and none is stored until the key is in place and relayd restarted", err)
		d.log.Error("the token store's key cannot be loaded: encrypted grants cannot be read, and none is stored", "err", err)
		return store
	}
	_, id := keys.Encrypting()
	res, err := store.Migrate()
	if err != nil {
		d.log.Error("encrypting the plain grant files", "err", err)
	}
	if len(res.Rewritten) > 0 {
		d.log.Info("plain grant files encrypted", "accounts", strings.Join(res.Rewritten, ","), "key_id", id, "key", keys.Where())
	}
	for _, f := range res.Failed {
		d.log.Error("a plain grant file could not be encrypted; it stays as it is", "account", f.Account, "err", f.Error)
	}
	return store
}

// encryption is what status says of the token store's encryption.
func (d *Daemon) encryption() status.Encryption {
	on, id := d.store.Keys.Encrypting()
	d.keyMu.Lock()
	defer d.keyMu.Unlock()
	return status.Encryption{Enabled: on, KeyID: id, Where: d.store.Keys.Where(), Warning: d.keyWarning}
}

// RotateKey implements status.KeyBackend: every grant file is rewritten
// under k while the old key stays accepted, so that a crash or a failure
// leaves each file readable; the old key is dropped once all were
// rewritten. relayd rotate-key then replaces key_file.
func (d *Daemon) RotateKey(k *auth.Key) (auth.RewriteResult, error) {
	res, err := d.store.Rekey(k)
	if err != nil {
		return res, err
	}
	if len(res.Failed) == 0 {
		d.store.Keys.Retire()
	}
	d.keyMu.Lock()
	d.keyWarning = ""
	d.keyMu.Unlock()
	return res, nil
}
