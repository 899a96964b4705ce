package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/relayd/relayd/internal/statedir"
)

// Grant is what relayd stores for an account: the refresh token of a
// delegated grant and the current access token. It is written as JSON, one
// file per account, mode 0600.
type Grant struct {
	AccessToken  string    `json:"access_token,omitempty"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry,omitempty"` // of the access token
	// GraphAccessToken and GraphExpiry are the access token for Microsoft
	// Graph (transport = "graph"), another resource than AccessToken's,
	// from the same refresh token; kept so that a restart needs no
	// refresh.
	GraphAccessToken string    `json:"graph_access_token,omitempty"`
	GraphExpiry      time.Time `json:"graph_expiry,omitzero"`
	// ClientID is the client the refresh token was issued to (RFC 6749 §6:
	// it works only with that client).
	ClientID string `json:"client_id,omitempty"`
	// GrantedAt is when the grant was obtained (authorize), RefreshedAt the
	// last successful refresh. Both feed the expiry forecast.
	GrantedAt   time.Time `json:"granted_at"`
	RefreshedAt time.Time `json:"refreshed_at,omitempty"`
	// Subject is who signed in, when known.
	Subject string `json:"subject,omitempty"`
	// SignInFrequency is the lifetime a Conditional Access sign-in
	// frequency policy gives grants, learned from AADSTS70043.
	SignInFrequency time.Duration `json:"sign_in_frequency,omitempty"`
	// IDToken is the ID token of an interactive sign-in, carried to the
	// daemon so that it checks the identity again; never stored.
	IDToken string `json:"id_token,omitempty"`
}

// Store keeps grants under a directory: DIR/NAME.json. Writes go to a
// temporary file which is fsynced, renamed over the old file, and followed by
// an fsync of the directory, so a crash leaves either the old or the new
// grant, never a torn one. Store is safe for use from any goroutine and any
// process: writers take an exclusive flock on DIR/NAME.lock.
//
// The directory belongs to the service user while `relayd authorize` may
// run as root, so every file in it is opened through package statedir:
// relative to the directory's descriptor, never following a link, and
// given the directory's owner by descriptor.
//
// With Keys set, grant files are encrypted (see sealGrant for the format);
// a plaintext file, from before a key existed, is still read, and
// Migrate rewrites it encrypted. A file that no key opens is never
// overwritten by Save or Update (ErrUndecryptable); only Replace, for a
// new grant, replaces it.
type Store struct {
	Dir string
	// Keys encrypt and decrypt grant files; nil: plain files.
	Keys *Keyring
}

// ErrNoGrant is returned by Load when an account has no stored grant.
var ErrNoGrant = errors.New("no grant stored")

func (s *Store) path(name string) string { return filepath.Join(s.Dir, name+".json") }

// Load returns the stored grant of account name, or ErrNoGrant.
func (s *Store) Load(name string) (*Grant, error) {
	d, err := statedir.OpenExisting(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoGrant
	} else if err != nil {
		return nil, fmt.Errorf("reading grant of account %q: %w", name, err)
	}
	defer d.Close()
	return s.load(d, name)
}

func (s *Store) load(d *statedir.Dir, name string) (*Grant, error) {
	b, err := d.ReadFile(name + ".json")
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoGrant
	} else if err != nil {
		return nil, fmt.Errorf("reading grant of account %q: %w", name, err)
	}
	g, _, err := s.openGrant(name, b)
	return g, err
}

// Save writes the grant of account name durably: a refreshed grant. It
// refuses (ErrUndecryptable) to overwrite a stored file that no key of
// the store opens, which may hold the only copy of a working grant.
func (s *Store) Save(name string, g *Grant) error {
	return s.locked(name, func(d *statedir.Dir) error {
		if _, err := s.load(d, name); errors.Is(err, ErrUndecryptable) {
			return err
		}
		return s.save(d, name, g)
	})
}

// Replace writes a new grant of account name durably (relayd authorize),
// whatever the stored file holds.
func (s *Store) Replace(name string, g *Grant) error {
	return s.locked(name, func(d *statedir.Dir) error { return s.save(d, name, g) })
}

func (s *Store) save(d *statedir.Dir, name string, g *Grant) error {
	stored := *g
	stored.IDToken = "" // checked, not kept
	b, err := json.MarshalIndent(&stored, "", "  ")
	if err != nil {
		return err
	}
	key, where, missing := s.Keys.encKey()
	switch {
	case key != nil:
		if b, err = sealGrant(key, name, b); err != nil {
			return fmt.Errorf("saving grant of account %q: %w", name, err)
		}
	case missing != nil:
		// A key was asked for: never write a refresh token in clear.
		return fmt.Errorf("saving grant of account %q: no key to encrypt it with (%s: %v): %w", name, where, missing, ErrNoKey)
	}
	f, err := d.CreateTemp("." + name + ".tmp")
	if err != nil {
		return fmt.Errorf("saving grant of account %q: %w", name, err)
	}
	tmp := filepath.Base(f.Name())
	defer d.Remove(tmp) // fails harmlessly after a successful rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("saving grant of account %q: %w", name, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("saving grant of account %q: %w", name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("saving grant of account %q: %w", name, err)
	}
	if err := d.Rename(tmp, d, name+".json"); err != nil {
		return fmt.Errorf("saving grant of account %q: %w", name, err)
	}
	return d.Sync()
}

// Update loads the grant of account name, lets fn change it, and saves the
// result, all under the account's file lock. fn receives nil when no grant
// is stored.
func (s *Store) Update(name string, fn func(*Grant) (*Grant, error)) error {
	return s.locked(name, func(d *statedir.Dir) error {
		old, err := s.load(d, name)
		if err != nil && !errors.Is(err, ErrNoGrant) {
			return err
		}
		g, err := fn(old)
		if err != nil {
			return err
		}
		return s.save(d, name, g)
	})
}

// locked runs fn with the state directory open and account name's lock
// held.
func (s *Store) locked(name string, fn func(*statedir.Dir) error) error {
	d, err := statedir.Open(s.Dir)
	if err != nil {
		return fmt.Errorf("opening the state directory for account %q: %w", name, err)
	}
	defer d.Close()
	unlock, err := lock(d, name)
	if err != nil {
		return err
	}
	defer unlock()
	return fn(d)
}

func lock(d *statedir.Dir, name string) (unlock func(), err error) {
	f, err := d.OpenFile(name+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking grant of account %q: %w", name, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("locking grant of account %q: %w", name, err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
