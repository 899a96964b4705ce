package auth

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/fault"
)

func testKey(t testing.TB) *Key {
	t.Helper()
	k, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

const secretRT = "1.AVsecret-refresh-token-0123456789"

func encryptedStore(t testing.TB, k *Key) *Store {
	t.Helper()
	return &Store{Dir: t.TempDir(), Keys: NewKeyring(k, "key_file /test/relayd.key")}
}

// A grant file copied off the machine without the key yields no token:
// the bytes hold no token in clear, and a store without the key (or with
// another) does not open it.
func TestEncryptedGrantHoldsNoToken(t *testing.T) {
	k := testKey(t)
	s := encryptedStore(t, k)
	g := &Grant{RefreshToken: secretRT, AccessToken: "access-secret-xyz", Subject: "support@contoso.com", GrantedAt: time.Now()}
	if err := s.Save("support", g); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(s.Dir, "support.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{secretRT, "access-secret-xyz", "support@contoso.com", "refresh_token"} {
		if bytes.Contains(b, []byte(secret)) {
			t.Errorf("grant file holds %q in clear:\n%s", secret, b)
		}
	}
	if !bytes.HasPrefix(b, []byte(`{"v":2,"kid":"`+k.ID()+`"`)) {
		t.Errorf("grant file = %s, want the v2 envelope with kid %s", b, k.ID())
	}
	if got, err := s.Load("support"); err != nil || got.RefreshToken != secretRT {
		t.Fatalf("Load with the key = %+v, %v", got, err)
	}

	// Elsewhere: no key, another key.
	other := t.TempDir()
	os.WriteFile(filepath.Join(other, "support.json"), b, 0o600)
	for _, keys := range []*Keyring{nil, NewKeyring(testKey(t), "key_file /elsewhere")} {
		g, err := (&Store{Dir: other, Keys: keys}).Load("support")
		if !errors.Is(err, ErrUndecryptable) || g != nil {
			t.Errorf("Load elsewhere = %+v, %v; want ErrUndecryptable", g, err)
		}
		if err != nil && !strings.Contains(err.Error(), k.ID()) {
			t.Errorf("error %q does not name the key the file needs (%s)", err, k.ID())
		}
	}
}

// The account name is authenticated: a file copied to another account's
// name does not open, even with the right key.
func TestGrantCopiedToAnotherNameDoesNotDecrypt(t *testing.T) {
	s := encryptedStore(t, testKey(t))
	if err := s.Save("support", &Grant{RefreshToken: secretRT}); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(s.Dir, "support.json"))
	os.WriteFile(filepath.Join(s.Dir, "sales.json"), b, 0o600)
	g, err := s.Load("sales")
	var ke *KeyError
	if !errors.As(err, &ke) || !ke.Tampered || g != nil {
		t.Fatalf("Load(sales) of support's file = %+v, %v; want a KeyError, Tampered", g, err)
	}
	if !strings.Contains(err.Error(), "copied from another account's name") {
		t.Errorf("error = %q, want it to say the file was copied", err)
	}
	// The version is authenticated too.
	v3 := bytes.Replace(b, []byte(`"v":2`), []byte(`"v":3`), 1)
	os.WriteFile(filepath.Join(s.Dir, "support.json"), v3, 0o600)
	if _, err := s.Load("support"); err == nil {
		t.Error("Load of a file relabelled v3 succeeded")
	}
}

// A wrong key never destroys a grant: Save and Update refuse to write
// over a file they cannot open, and the bytes stay as they were.
func TestWrongKeyLeavesFileUnchanged(t *testing.T) {
	right := encryptedStore(t, testKey(t))
	if err := right.Save("support", &Grant{RefreshToken: secretRT}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(right.Dir, "support.json")
	before, _ := os.ReadFile(path)
	wrong := &Store{Dir: right.Dir, Keys: NewKeyring(testKey(t), "key_file /wrong")}
	if err := wrong.Save("support", &Grant{RefreshToken: "other"}); !errors.Is(err, ErrUndecryptable) {
		t.Errorf("Save under a wrong key = %v, want ErrUndecryptable", err)
	}
	if err := wrong.Update("support", func(g *Grant) (*Grant, error) { return &Grant{RefreshToken: "x"}, nil }); !errors.Is(err, ErrUndecryptable) {
		t.Errorf("Update under a wrong key = %v, want ErrUndecryptable", err)
	}
	res, err := wrong.Migrate()
	if err != nil || len(res.Rewritten) != 0 {
		t.Errorf("Migrate under a wrong key = %+v, %v; want nothing rewritten", res, err)
	}
	// A keyring whose key_file is missing writes nothing, in clear or not.
	missing := &Store{Dir: right.Dir, Keys: &Keyring{where: "key_file /nope", missing: errors.New("key_file /nope does not exist")}}
	if err := missing.Save("support", &Grant{RefreshToken: "y"}); err == nil {
		t.Error("Save with no key succeeded")
	}
	if err := missing.Save("sales", &Grant{RefreshToken: "y"}); !errors.Is(err, ErrNoKey) {
		t.Errorf("Save of a new grant with key_file missing = %v, want ErrNoKey (never in clear)", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Errorf("grant file changed under a wrong key:\nbefore %s\nafter  %s", before, after)
	}
	if g, err := right.Load("support"); err != nil || g.RefreshToken != secretRT {
		t.Errorf("Load with the right key afterwards = %+v, %v", g, err)
	}
	// A new grant (relayd authorize) replaces it.
	if err := wrong.Replace("support", &Grant{RefreshToken: "new"}); err != nil {
		t.Errorf("Replace = %v", err)
	}
}

// A plain store (before any key) is read, and Migrate encrypts each file
// in place.
func TestMigratePlainStore(t *testing.T) {
	dir := t.TempDir()
	plain := &Store{Dir: dir}
	for _, n := range []string{"support", "sales"} {
		if err := plain.Save(n, &Grant{RefreshToken: secretRT + n}); err != nil {
			t.Fatal(err)
		}
	}
	s := &Store{Dir: dir, Keys: NewKeyring(testKey(t), "key_file /test")}
	if g, err := s.Load("sales"); err != nil || g.RefreshToken != secretRT+"sales" {
		t.Fatalf("Load of a plain file with a key = %+v, %v", g, err)
	}
	res, err := s.Migrate()
	if err != nil || strings.Join(res.Rewritten, ",") != "sales,support" || len(res.Failed) != 0 {
		t.Fatalf("Migrate = %+v, %v", res, err)
	}
	for _, n := range []string{"support", "sales"} {
		b, _ := os.ReadFile(filepath.Join(dir, n+".json"))
		if bytes.Contains(b, []byte(secretRT)) || !s.Encrypted(n) {
			t.Errorf("%s after Migrate: %s", n, b)
		}
		if g, err := s.Load(n); err != nil || g.RefreshToken != secretRT+n {
			t.Errorf("Load(%s) after Migrate = %+v, %v", n, g, err)
		}
	}
	if res, _ := s.Migrate(); len(res.Rewritten) != 0 {
		t.Errorf("second Migrate rewrote %v", res.Rewritten)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("temporary file left: %s", e.Name())
		}
	}
}

// Rekey cut short after the first file (fault point "rekey"): with the old
// and the pending key, as LoadKeyring gives them after a crash, every
// grant opens; a second Rekey finishes the job.
func TestRekeyCutShort(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(t.TempDir(), "relayd.key")
	old := testKey(t)
	if err := WriteKeyFile(keyFile, old, -1); err != nil {
		t.Fatal(err)
	}
	s := &Store{Dir: dir, Keys: NewKeyring(old, "key_file "+keyFile)}
	names := []string{"a", "b", "c"}
	for _, n := range names {
		if err := s.Save(n, &Grant{RefreshToken: secretRT + n}); err != nil {
			t.Fatal(err)
		}
	}
	nk := testKey(t)
	if err := WriteKeyFile(keyFile+PendingSuffix, nk, -1); err != nil {
		t.Fatal(err)
	}
	errCut := errors.New("cut")
	hits := 0
	disarm := fault.Arm(func(name string) {
		if name == "rekey" {
			if hits++; hits == 1 {
				panic(errCut)
			}
		}
	})
	func() {
		defer func() { recover() }()
		s.Rekey(nk)
	}()
	disarm()
	if hits != 1 {
		t.Fatalf("fault point rekey hit %d times", hits)
	}
	// As after a restart.
	r, err := LoadKeyring(KeyOptions{KeyFile: keyFile})
	if err != nil {
		t.Fatal(err)
	}
	after := &Store{Dir: dir, Keys: r}
	for _, n := range names {
		if g, err := after.Load(n); err != nil || g.RefreshToken != secretRT+n {
			t.Errorf("Load(%s) after a rotation cut short = %+v, %v", n, g, err)
		}
	}
	res, err := after.Rekey(nk)
	if err != nil || len(res.Rewritten) != 2 || len(res.Failed) != 0 {
		t.Errorf("resumed Rekey = %+v, %v; want the two files left", res, err)
	}
	only := &Store{Dir: dir, Keys: NewKeyring(nk, "new")}
	for _, n := range names {
		if _, err := only.Load(n); err != nil {
			t.Errorf("Load(%s) with the new key alone = %v", n, err)
		}
	}
}

func TestLoadKeyring(t *testing.T) {
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "relayd.key")
	if r, err := LoadKeyring(KeyOptions{KeyFile: keyFile}); r != nil || !errors.Is(err, ErrNoKeyFile) {
		t.Errorf("no key file, default = %v, %v; want nil, ErrNoKeyFile", r, err)
	}
	r, err := LoadKeyring(KeyOptions{KeyFile: keyFile, Explicit: true})
	if err == nil || r == nil || r.Missing() == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("no key file, explicit = %v, %v; want a keyring without key and why", r, err)
	}
	os.WriteFile(keyFile, []byte("short\n"), 0o640)
	if _, err := LoadKeyring(KeyOptions{KeyFile: keyFile}); err == nil || !strings.Contains(err.Error(), "base64") {
		t.Errorf("malformed key = %v", err)
	}
	k := testKey(t)
	WriteKeyFile(keyFile, k, -1)
	if fi, _ := os.Stat(keyFile); fi.Mode().Perm() != 0o640 {
		t.Errorf("key file mode %v, want 0640", fi.Mode().Perm())
	}
	if r, err := LoadKeyring(KeyOptions{KeyFile: keyFile}); err != nil || r.Where() != "key_file "+keyFile {
		t.Errorf("key file = %v, %v", r, err)
	} else if ok, id := r.Encrypting(); !ok || id != k.ID() {
		t.Errorf("Encrypting = %v %s, want %s", ok, id, k.ID())
	}
	// A systemd credential is preferred; key_file stays accepted.
	creds := t.TempDir()
	ck := testKey(t)
	WriteKeyFile(filepath.Join(creds, CredentialName), ck, -1)
	r, err = LoadKeyring(KeyOptions{KeyFile: keyFile, CredentialsDir: creds})
	if err != nil || !strings.Contains(r.Where(), "credential") {
		t.Fatalf("credential = %v, %v", r, err)
	}
	if _, id := r.Encrypting(); id != ck.ID() || r.decKey(k.ID()) == nil {
		t.Errorf("credential keyring encrypts under %s (want %s), decrypts with key_file's: %v", id, ck.ID(), r.decKey(k.ID()) != nil)
	}
}

// BenchmarkSealOpenGrant is the cost encryption adds to each refresh: one
// grant sealed (Save) and one opened (the Save's check of the old file).
func BenchmarkSealOpenGrant(b *testing.B) {
	k := testKey(b)
	s := &Store{Dir: "/nonexistent", Keys: NewKeyring(k, "bench")}
	plain := []byte(`{"access_token":"` + strings.Repeat("a", 1800) + `","refresh_token":"` + strings.Repeat("r", 900) + `","expiry":"2026-01-01T00:00:00Z","granted_at":"2026-01-01T00:00:00Z"}`)
	b.SetBytes(int64(len(plain)))
	b.ReportAllocs()
	for b.Loop() {
		sealed, err := sealGrant(k, "support", plain)
		if err != nil {
			b.Fatal(err)
		}
		if _, _, err := s.openGrant("support", sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkStoreSave is a whole refresh's write: encrypted and plain,
// with the fsyncs (the figure the README quotes is the difference).
func BenchmarkStoreSave(b *testing.B) {
	g := &Grant{AccessToken: strings.Repeat("a", 1800), RefreshToken: strings.Repeat("r", 900), GrantedAt: time.Now()}
	for _, c := range []struct {
		name string
		keys *Keyring
	}{{"plain", nil}, {"encrypted", NewKeyring(testKey(b), "bench")}} {
		b.Run(c.name, func(b *testing.B) {
			s := &Store{Dir: b.TempDir(), Keys: c.keys}
			for b.Loop() {
				if err := s.Save("support", g); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
