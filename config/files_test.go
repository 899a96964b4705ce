package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// CheckFiles refuses secret and CA files that others may change (0602,
// 0660), naming the chmod that fixes them, and an admin_group that does
// not exist.
func TestCheckFilesModes(t *testing.T) {
	dir := t.TempDir()
	secret, ca := filepath.Join(dir, "client.secret"), filepath.Join(dir, "ca.pem")
	os.WriteFile(secret, []byte("s\n"), 0o600)
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644)
	doc := `[[account]]
name = "a"
provider = "custom"
email = "a@example.com"
client_id = "c"
client_secret_file = "` + secret + `"
ca_file = "` + ca + `"
token_url = "http://127.0.0.1/token"
imap_server = "127.0.0.1:993"
smtp_server = "127.0.0.1:587"
local_password_hash = "` + hash + `"
`
	cfg, err := Parse(doc)
	if err != nil {
		t.Fatal(err)
	}
	if errs := cfg.CheckFiles(); len(errs) != 0 {
		t.Fatalf("CheckFiles() with 0600 secret, 0644 CA = %v", errs)
	}
	for _, tc := range []struct {
		file string
		mode os.FileMode
		want string
	}{
		{secret, 0o602, "account[1].client_secret_file: " + secret + " holds a secret but others may change it (mode 0602): chmod go-w " + secret},
		{secret, 0o620, "chmod go-w " + secret},
		{ca, 0o646, "account[1].ca_file: " + ca + " holds the CAs trusted for the upstream servers but others may change it (mode 0646): chmod go-w " + ca},
		{ca, 0o664, "chmod go-w " + ca},
	} {
		os.Chmod(tc.file, tc.mode)
		errs := cfg.CheckFiles()
		if len(errs) != 1 || !strings.Contains(errs[0].Error(), tc.want) {
			t.Errorf("CheckFiles() with %s at %04o = %v, want %q", filepath.Base(tc.file), tc.mode, errs, tc.want)
		}
		os.Chmod(secret, 0o600)
		os.Chmod(ca, 0o644)
	}

	cfg.AdminGroup = "no-such-group-relayd"
	errs := cfg.CheckFiles()
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), `admin_group: group "no-such-group-relayd" does not exist: create it (groupadd no-such-group-relayd) or remove admin_group`) {
		t.Errorf("CheckFiles() with an unknown admin_group = %v", errs)
	}
}

// A configuration file everyone may read is worth a warning when it holds
// local password hashes.
func TestModeWarnings(t *testing.T) {
	cfg, err := Parse(`[[account]]
name = "p"
provider = "password"
email = "p@example.com"
imap_server = "127.0.0.1:993"
direction = "incoming"
password_file = "/nonexistent/pw"
local_password_hash = "` + hash + `"`)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "relayd.toml")
	os.WriteFile(path, nil, 0o640)
	if w := cfg.ModeWarnings(path); len(w) != 0 {
		t.Errorf("ModeWarnings(0640) = %q, want none", w)
	}
	os.Chmod(path, 0o644)
	if w := cfg.ModeWarnings(path); len(w) != 1 || !strings.Contains(w[0], "holds local_password_hash but everyone may read it (mode 0644): chmod o-r "+path) {
		t.Errorf("ModeWarnings(0644) = %q", w)
	}
}

// CheckFiles loads each listener certificate and key as relayd would: an
// unreadable file, a key that matches no certificate, and a key others may
// read are errors naming the key and the file.
func TestCheckFilesListenerTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyPEM, certPEM, err := testkitSelfSigned("relayd.example.net")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o640)
	parse := func(c, k string) *Config {
		cfg, err := Parse("state_dir = \"" + dir + "\"\n[imap]\nlisten = [\"0.0.0.0:143\"]\ntls_cert = \"" + c + "\"\ntls_key = \"" + k + "\"\n")
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	only := func(errs []error) string {
		var l []string
		for _, e := range errs {
			if s := e.Error(); strings.Contains(s, "tls_") {
				l = append(l, s)
			}
		}
		return strings.Join(l, "\n")
	}
	if got := only(parse(certFile, keyFile).CheckFiles()); got != "" {
		t.Fatalf("CheckFiles() = %s, want nothing about the certificate", got)
	}
	missing := filepath.Join(dir, "missing.pem")
	if got := only(parse(missing, keyFile).CheckFiles()); !strings.Contains(got, "imap.tls_cert: cannot read "+missing) {
		t.Errorf("CheckFiles() with a missing certificate = %q", got)
	}
	if got := only(parse(certFile, certFile).CheckFiles()); !strings.Contains(got, "imap.tls_cert, imap.tls_key: "+certFile+" and "+certFile+" are no certificate and matching key") {
		t.Errorf("CheckFiles() with the certificate as key = %q", got)
	}
	os.Chmod(keyFile, 0o644)
	if got := only(parse(certFile, keyFile).CheckFiles()); !strings.Contains(got, "imap.tls_key: "+keyFile+" holds a private key but others may read or change it (mode 0644)") {
		t.Errorf("CheckFiles() with a 0644 key = %q", got)
	}
}

// testkitSelfSigned returns a self-signed certificate's key and
// certificate in PEM (package testkit imports config, so not from there).
func testkitSelfSigned(host string) (keyPEM, certPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	kd, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
