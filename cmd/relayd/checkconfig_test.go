package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayd/relayd/internal/testkit"
)

// check-config refuses what would be unsafe to run with, as serve does:
// account names and addresses with control characters or of any length,
// and secret files others may change; it warns about a configuration file
// everyone may read that holds password hashes.
func TestCheckConfigRefusesUnsafe(t *testing.T) {
	e := newEnv(t)
	good, _ := os.ReadFile(e.cfg)
	secret := filepath.Join(e.dir, "client.secret")
	for _, tc := range []struct {
		name, old, new, want string
		secretMode           os.FileMode
	}{
		{"name with NUL", `name = "support"`, `name = "sup\u0000port"`, `account[1].name: "sup\x00port" is not allowed: use up to 64 ASCII letters`, 0o600},
		{"name with CR", `name = "support"`, `name = "sup\rport"`, `account[1].name: "sup\rport" is not allowed`, 0o600},
		{"name with ESC", `name = "support"`, `name = "sup\u001b[2Jport"`, `account[1].name: "sup\x1b[2Jport" is not allowed`, 0o600},
		{"name of 300 characters", `name = "support"`, `name = "` + strings.Repeat("s", 300) + `"`, `… (300 bytes) is not allowed`, 0o600},
		{"email with a newline", `email = "` + mbox + `"`, `email = "` + mbox + `\nBcc: x@example.net"`, `account[1].email: "` + mbox + `\nBcc: x@example.net" holds a control character`, 0o600},
		{"secret others may write", "", "", `account[1].client_secret_file: ` + secret + ` holds a secret but others may change it (mode 0602): chmod go-w ` + secret, 0o602},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := strings.Replace(string(good), tc.old, tc.new, 1)
			os.WriteFile(e.cfg, []byte(doc), 0o600)
			defer os.WriteFile(e.cfg, good, 0o600)
			os.Chmod(secret, tc.secretMode)
			defer os.Chmod(secret, 0o600)
			out, code := e.run("check-config", e.cfg)
			if code != 1 || !strings.Contains(out, tc.want) {
				t.Errorf("check-config: exit %d\n%s\nwant %q", code, out, tc.want)
			}
			if strings.ContainsAny(out, "\x00\r\x1b") {
				t.Errorf("check-config printed a control character: %q", out)
			}
			out, code = e.run("serve", "-c", e.cfg)
			if code == 0 || !strings.Contains(out, tc.want) {
				t.Errorf("serve: exit %d\n%s\nwant a refusal naming %q", code, out, tc.want)
			}
		})
	}

	t.Run("config everyone may read", func(t *testing.T) {
		os.Chmod(e.cfg, 0o644)
		defer os.Chmod(e.cfg, 0o600)
		out, code := e.run("check-config", e.cfg)
		want := "warning: " + e.cfg + " holds local_password_hash but everyone may read it (mode 0644): chmod o-r " + e.cfg
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("check-config: exit %d\n%s\nwant %q", code, out, want)
		}
	})
}

// check-config refuses a [pop3] listen address beyond loopback without a
// certificate, naming the keys to set; with tls_cert and tls_key (loaded
// as relayd would) the same listener passes.
func TestCheckConfigPOP3BeyondLoopback(t *testing.T) {
	e := newEnv(t)
	e.conf.Accounts[0].POP3Server = e.up.Addr
	e.conf.POP3Listen = []string{"0.0.0.0:1110"}
	e.writeConfig()
	out, code := e.run("check-config", e.cfg)
	want := `pop3.listen[0]: "0.0.0.0" is not a loopback address: a listener beyond loopback needs TLS, because legacy clients send passwords: set pop3.tls_cert and pop3.tls_key`
	if code != 1 || !strings.Contains(out, want) {
		t.Errorf("check-config: exit %d\n%s\nwant %q", code, out, want)
	}

	cert, certPEM, err := testkit.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM, err := testkit.PEMKey(cert)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(e.dir, "pop3.pem"), filepath.Join(e.dir, "pop3.key")
	os.WriteFile(certFile, certPEM, 0o644)
	os.WriteFile(keyFile, keyPEM, 0o640)
	e.conf.POP3 = []string{`tls_cert = "` + certFile + `"`, `tls_key = "` + keyFile + `"`, `listen_tls = ["0.0.0.0:1995"]`}
	e.writeConfig()
	if out, code := e.run("check-config", e.cfg); code != 0 {
		t.Errorf("check-config with pop3.tls_cert: exit %d\n%s", code, out)
	}
}
