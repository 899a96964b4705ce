package auth

import (
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"sort"
	"strings"

	"golang.org/x/crypto/chacha20poly1305"

	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/internal/statedir"
)

// grantVersion is the version of an encrypted grant file. A plain grant
// file (a Grant as JSON, with no "v") is version 1.
const grantVersion = 2

// envelope is an encrypted grant file:
//
//	{"v":2,"kid":"1a2b3c4d","nonce":"<24 bytes, base64>","ciphertext":"<base64>"}
//
// The ciphertext is the grant's JSON sealed with XChaCha20-Poly1305 under
// the key whose ID is kid, with the additional data "relayd-grant v2
// NAME": a file copied to another account's name, or relabelled with
// another version, does not open. kid only picks the key; it is not
// authenticated, and a wrong one fails like a wrong key.
type envelope struct {
	V          int    `json:"v"`
	KeyID      string `json:"kid,omitempty"`
	Nonce      []byte `json:"nonce,omitempty"`
	Ciphertext []byte `json:"ciphertext,omitempty"`
}

func grantAAD(v int, name string) []byte {
	return []byte(fmt.Sprintf("relayd-grant v%d %s", v, name))
}

// sealGrant encrypts plain, account name's grant as JSON, under k.
func sealGrant(k *Key, name string, plain []byte) ([]byte, error) {
	aead, err := chacha20poly1305.NewX(k[:])
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, chacha20poly1305.NonceSizeX)
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	e := envelope{V: grantVersion, KeyID: k.ID(), Nonce: nonce,
		Ciphertext: aead.Seal(nil, nonce, plain, grantAAD(grantVersion, name))}
	b, err := json.Marshal(&e)
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ErrUndecryptable means a grant file is encrypted and no key of the
// store opens it: the key is missing or wrong, or the file was copied from
// another account's name. The file is left as it is.
var ErrUndecryptable = errors.New("grant file cannot be decrypted")

// ErrNoKey means a grant could not be stored because the key that should
// encrypt it is missing: nothing is written in clear instead.
var ErrNoKey = errors.New("no key")

// KeyError is why a grant file does not open. It wraps ErrUndecryptable.
type KeyError struct {
	Account string
	Path    string
	// KeyID is the key the file says it is encrypted under.
	KeyID string
	// Have are the IDs of the keys tried; Where says where the store's
	// key comes from.
	Have  []string
	Where string
	// Missing is why the store has no key, when it has none.
	Missing error
	// Tampered is true when a key with the file's id did not open it:
	// the file was copied from another account's name, or changed.
	Tampered bool
}

func (e *KeyError) Error() string {
	switch {
	case e.Tampered:
		return fmt.Sprintf("grant file %s does not decrypt as account %q's grant under key %s: it was copied from another account's name or changed", e.Path, e.Account, e.KeyID)
	case len(e.Have) == 0 && e.Missing != nil:
		return fmt.Sprintf("grant file %s is encrypted under key %s, and relayd has no key (%v)", e.Path, e.KeyID, e.Missing)
	case len(e.Have) == 0:
		return fmt.Sprintf("grant file %s is encrypted under key %s, and relayd has no key: %s does not exist", e.Path, e.KeyID, strings.TrimPrefix(e.Where, "key_file "))
	}
	return fmt.Sprintf("grant file %s is encrypted under key %s, not under %s's key %s", e.Path, e.KeyID, e.Where, strings.Join(e.Have, ", "))
}

// Unwrap makes errors.Is(e, ErrUndecryptable) true.
func (e *KeyError) Unwrap() error { return ErrUndecryptable }

// openGrant reads the grant file b of account name: encrypted, or plain
// (encrypted is false).
func (s *Store) openGrant(name string, b []byte) (g *Grant, encrypted bool, err error) {
	var e envelope
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, false, fmt.Errorf("grant file %s is corrupt (%v): run 'relayd authorize %s' again", s.path(name), err, name)
	}
	plain := b
	switch {
	case e.V == grantVersion:
		encrypted = true
		ke := &KeyError{Account: name, Path: s.path(name), KeyID: e.KeyID, Have: s.Keys.ids(), Where: s.Keys.Where(), Missing: s.Keys.Missing()}
		k := s.Keys.decKey(e.KeyID)
		if k == nil {
			return nil, true, ke
		}
		aead, err := chacha20poly1305.NewX(k[:])
		if err != nil {
			return nil, true, err
		}
		if len(e.Nonce) != aead.NonceSize() {
			ke.Tampered = true
			return nil, true, ke
		}
		if plain, err = aead.Open(nil, e.Nonce, e.Ciphertext, grantAAD(e.V, name)); err != nil {
			ke.Tampered = true
			return nil, true, ke
		}
	case e.V != 0:
		return nil, false, fmt.Errorf("grant file %s has version %d, which this relayd does not know: was it written by a newer relayd?", s.path(name), e.V)
	}
	g = new(Grant)
	if err := json.Unmarshal(plain, g); err != nil {
		return nil, encrypted, fmt.Errorf("grant file %s is corrupt (%v): run 'relayd authorize %s' again", s.path(name), err, name)
	}
	return g, encrypted, nil
}

// Names returns the accounts that have a grant file, sorted.
func (s *Store) Names() ([]string, error) {
	d, err := statedir.OpenExisting(s.Dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	} else if err != nil {
		return nil, err
	}
	defer d.Close()
	ents, err := d.ReadDir()
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		n := e.Name()
		if strings.HasSuffix(n, ".json") && !strings.HasPrefix(n, ".") && e.Type().IsRegular() {
			names = append(names, strings.TrimSuffix(n, ".json"))
		}
	}
	sort.Strings(names)
	return names, nil
}

// Encrypted reports whether account name's grant file is encrypted
// (whether or not this store can open it).
func (s *Store) Encrypted(name string) bool {
	d, err := statedir.OpenExisting(s.Dir)
	if err != nil {
		return false
	}
	defer d.Close()
	b, err := d.ReadFile(name + ".json")
	if err != nil {
		return false
	}
	var e envelope
	return json.Unmarshal(b, &e) == nil && e.V == grantVersion
}

// RewriteResult is what Migrate and Rekey did.
type RewriteResult struct {
	// Rewritten are the accounts whose file was rewritten under the
	// encryption key.
	Rewritten []string `json:"rewritten"`
	// Failed are the files left as they were, each with why.
	Failed []RewriteFailure `json:"failed,omitempty"`
}

// RewriteFailure is a grant file Migrate or Rekey left alone.
type RewriteFailure struct {
	Account string `json:"account"`
	Error   string `json:"error"`
}

// Migrate encrypts every plain grant file under the store's key, each
// under its lock and through the store's atomic write (temporary file,
// fsync, rename): a crash leaves each file plain or encrypted, and both
// are read. Encrypted files are left alone.
func (s *Store) Migrate() (RewriteResult, error) {
	return s.rewrite("", func(encrypted bool, kid string) bool { return !encrypted })
}

// Rekey makes k the store's encryption key and rewrites under it every
// grant file not yet under it; the old keys stay accepted, so a file
// not yet rewritten (a crash, a failure) still opens. Files no key opens
// are left unchanged and listed in Failed. It passes fault point "rekey"
// after each file rewritten.
func (s *Store) Rekey(k *Key) (RewriteResult, error) {
	if s.Keys == nil {
		return RewriteResult{}, errors.New("the store has no keyring")
	}
	s.Keys.Rotate(k)
	id := k.ID()
	return s.rewrite("rekey", func(encrypted bool, kid string) bool { return !encrypted || kid != id })
}

// rewrite saves again, under the encryption key, every grant for which
// want is true.
func (s *Store) rewrite(point string, want func(encrypted bool, kid string) bool) (RewriteResult, error) {
	var res RewriteResult
	names, err := s.Names()
	if err != nil {
		return res, fmt.Errorf("listing the grants in %s: %w", s.Dir, err)
	}
	for _, name := range names {
		done := false
		err := s.locked(name, func(d *statedir.Dir) error {
			b, err := d.ReadFile(name + ".json")
			if err != nil {
				return err
			}
			var e envelope
			json.Unmarshal(b, &e)
			if !want(e.V == grantVersion, e.KeyID) {
				return nil
			}
			g, _, err := s.openGrant(name, b)
			if err != nil {
				return err
			}
			if err := s.save(d, name, g); err != nil {
				return err
			}
			done = true
			return nil
		})
		if err != nil {
			res.Failed = append(res.Failed, RewriteFailure{Account: name, Error: err.Error()})
			continue
		}
		if done {
			res.Rewritten = append(res.Rewritten, name)
			if point != "" {
				fault.Hit(point)
			}
		}
	}
	return res, nil
}
