package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// KeySize is the length of a key of the token store: 32 random bytes,
// written base64 on one line.
const KeySize = 32

// Key encrypts grant files (XChaCha20-Poly1305). It comes from key_file or
// from a systemd credential, never from a client's password, so refreshes
// and deliveries run with no client connected.
type Key [KeySize]byte

// ID names the key in grant files without revealing it: the first four
// bytes of SHA-256 over a label and the key, in hex. It lets relayd say
// which key a file needs.
func (k *Key) ID() string {
	h := sha256.New()
	h.Write([]byte("relayd key id\x00"))
	h.Write(k[:])
	return hex.EncodeToString(h.Sum(nil)[:4])
}

// GenerateKey returns a new random key.
func GenerateKey() (*Key, error) {
	var k Key
	if _, err := rand.Read(k[:]); err != nil {
		return nil, fmt.Errorf("generating a key: %w", err)
	}
	return &k, nil
}

// ParseKey reads a key as key_file holds it: 32 bytes, standard base64,
// on one line (surrounding white space ignored).
func ParseKey(b []byte) (*Key, error) {
	s := strings.TrimSpace(string(b))
	raw, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(raw) != KeySize {
		return nil, fmt.Errorf("not a relayd key: want %d random bytes in base64 on one line (as 'head -c 32 /dev/urandom | base64' writes)", KeySize)
	}
	var k Key
	copy(k[:], raw)
	return &k, nil
}

// String returns the key as key_file holds it, with a newline.
func (k *Key) String() string { return base64.StdEncoding.EncodeToString(k[:]) + "\n" }

// ReadKeyFile reads the key in the file at path.
func ReadKeyFile(path string) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// WriteKeyFile writes k to path atomically: a temporary file beside it,
// mode 0640 and group gid (-1: unchanged), fsynced, renamed over path, and
// the directory fsynced. A crash leaves the old file or the new one.
func WriteKeyFile(path string, k *Key, gid int) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp")
	if err != nil {
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // fails harmlessly after the rename
	fail := func(err error) error {
		f.Close()
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	if err := f.Chmod(0o640); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := f.Chown(-1, gid); err != nil {
			return fail(err)
		}
	}
	if _, err := f.WriteString(k.String()); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing key file %s: %w", path, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// CredentialName is the name of the systemd credential that holds the key
// (LoadCredential=relayd.key:… or LoadCredentialEncrypted=relayd.key:…).
const CredentialName = "relayd.key"

// PendingSuffix names the key that relayd rotate-key is moving the grants
// to (key_file + PendingSuffix) until every grant is rewritten and it
// replaces key_file. Whoever loads the keys also accepts it, so that a
// rotation cut short leaves every grant readable.
const PendingSuffix = ".new"

// Keyring is the token store's keys: the one new files are encrypted
// under, and every key a file may be encrypted under (after a rotation cut
// short, two). Safe for use from any goroutine; relayd rotate-key changes
// it in the running daemon.
type Keyring struct {
	mu  sync.RWMutex
	enc *Key
	dec []*Key
	// where says where the encryption key came from, for messages:
	// "key_file /etc/relayd/relayd.key" or "the systemd credential
	// relayd.key".
	where string
	// missing is why there is no encryption key when there should be one.
	missing error
}

// NewKeyring returns a keyring that encrypts under enc (from where) and
// also decrypts with others.
func NewKeyring(enc *Key, where string, others ...*Key) *Keyring {
	r := &Keyring{enc: enc, where: where}
	r.dec = append(r.dec, enc)
	for _, k := range others {
		r.addDec(k)
	}
	return r
}

func (r *Keyring) addDec(k *Key) {
	for _, d := range r.dec {
		if *d == *k {
			return
		}
	}
	r.dec = append(r.dec, k)
}

// PlainKeyring is a keyring with no key yet: grants are written in plain
// files until Rotate gives it one; where names the key_file it would be.
func PlainKeyring(where string) *Keyring { return &Keyring{where: where} }

// Encrypting reports whether new grant files are encrypted, and the
// encryption key's id.
func (r *Keyring) Encrypting() (bool, string) {
	if r == nil {
		return false, ""
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.enc == nil {
		return false, ""
	}
	return true, r.enc.ID()
}

// Where says where the encryption key comes from (or should).
func (r *Keyring) Where() string {
	if r == nil {
		return "no key"
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.where
}

// Missing is why the keyring has no key although one was asked for
// (key_file set but unreadable), or nil.
func (r *Keyring) Missing() error {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.missing
}

// Rotate makes k the encryption key; the keys in force stay accepted
// for decryption, so that files not yet rewritten still open.
func (r *Keyring) Rotate(k *Key) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.enc = k
	r.missing = nil
	r.addDec(k)
}

// Retire keeps only the encryption key for decryption: after a rotation
// that rewrote every grant.
func (r *Keyring) Retire() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.enc != nil {
		r.dec = []*Key{r.enc}
	}
}

func (r *Keyring) encKey() (*Key, string, error) {
	if r == nil {
		return nil, "", nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.enc, r.where, r.missing
}

func (r *Keyring) decKey(id string) *Key {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	for _, k := range r.dec {
		if k.ID() == id {
			return k
		}
	}
	return nil
}

func (r *Keyring) ids() []string {
	if r == nil {
		return nil
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	var ids []string
	for _, k := range r.dec {
		ids = append(ids, k.ID())
	}
	return ids
}

// ErrNoKeyFile is returned by LoadKeyring when key_file does not exist and
// was not set explicitly: grants stay in plain files.
var ErrNoKeyFile = errors.New("no key file")

// KeyOptions say where LoadKeyring looks.
type KeyOptions struct {
	// KeyFile is key_file (default /etc/relayd/relayd.key).
	KeyFile string
	// Explicit is true when the configuration set key_file: a missing
	// file is then a key that should be there.
	Explicit bool
	// CredentialsDir is $CREDENTIALS_DIRECTORY (systemd); its relayd.key,
	// when present, is preferred over KeyFile.
	CredentialsDir string
}

// LoadKeyring loads the token store's keys: the systemd credential
// relayd.key when CredentialsDir has one, else KeyFile; a pending key
// (KeyFile + PendingSuffix) left by a rotation cut short and, with a
// credential, a readable KeyFile are accepted for decryption too.
//
// When KeyFile does not exist and was not set explicitly, it returns
// (nil, ErrNoKeyFile): grants are kept in plain files. Any other failure
// (a missing explicit key_file, a file this user may not read, a
// malformed key) returns a keyring that decrypts nothing and refuses to
// write, with Missing saying why, and that error: the grants it cannot
// open become grant_undecryptable, none is overwritten.
func LoadKeyring(o KeyOptions) (*Keyring, error) {
	var others []*Key
	if k, err := ReadKeyFile(o.KeyFile + PendingSuffix); err == nil {
		others = append(others, k)
	}
	if o.CredentialsDir != "" {
		p := filepath.Join(o.CredentialsDir, CredentialName)
		k, err := ReadKeyFile(p)
		if err == nil {
			if fk, err := ReadKeyFile(o.KeyFile); err == nil {
				others = append(others, fk)
			}
			return NewKeyring(k, "the systemd credential "+CredentialName, others...), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("the systemd credential %s: %w", CredentialName, err)
			return &Keyring{where: "the systemd credential " + CredentialName, missing: err}, err
		}
	}
	where := "key_file " + o.KeyFile
	k, err := ReadKeyFile(o.KeyFile)
	switch {
	case err == nil:
		return NewKeyring(k, where, others...), nil
	case errors.Is(err, fs.ErrNotExist) && !o.Explicit && len(others) == 0:
		return nil, ErrNoKeyFile
	}
	if errors.Is(err, fs.ErrPermission) {
		err = fmt.Errorf("%s: this user may not read it (root and relayd's user may)", o.KeyFile)
	} else if errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("key_file %s does not exist", o.KeyFile)
	}
	r := &Keyring{where: where, missing: err}
	for _, k := range others {
		r.addDec(k)
	}
	return r, err
}
