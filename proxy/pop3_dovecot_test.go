package proxy

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
)

// startDovecotPOP3 runs a real Dovecot checking tokens at the test's fake
// IdP, with three messages for testMailbox, reached over POP3 in
// plaintext, with implicit TLS or with STLS.
func startDovecotPOP3(t *testing.T, sec config.Security) pop3Opts {
	return pop3Opts{tls: sec != config.SecurityNone, security: sec, upstream: func(idp *testkit.IdP) (string, []byte) {
		d := realserver.StartDovecot(t, idp, realserver.DovecotOptions{})
		for i := 1; i <= 3; i++ {
			if err := d.Deliver(testMailbox, []byte(fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n", i, i))); err != nil {
				t.Fatal(err)
			}
		}
		if sec == config.SecurityTLS {
			return d.POP3SAddr, d.CertPEM
		}
		return d.POP3Addr, d.CertPEM
	}}
}

// curl, a real POP3 client, lists and reads mail from Dovecot through
// relayd, which logs in at Dovecot with XOAUTH2 (its oauth2 passdb asks
// the IdP).
func TestDovecotPOP3Curl(t *testing.T) {
	curl := realserver.RequireBinary(t, "curl", "curl")
	for _, sec := range []config.Security{config.SecurityNone, config.SecurityTLS, config.SecuritySTARTTLS} {
		t.Run(string(sec), func(t *testing.T) {
			r := newPOP3Relay(t, startDovecotPOP3(t, sec))
			out, err := exec.Command(curl, "-sS", "--max-time", "20", "pop3://"+r.addr+"/2", "-u", testUser+":"+testPassword).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v: %s\nrelayd log:\n%s", err, out, r.logs.String())
			}
			if !strings.Contains(string(out), "Subject: message 2\r\n\r\nbody 2") {
				t.Errorf("curl RETR 2 = %q", out)
			}
			out, err = exec.Command(curl, "-sS", "--max-time", "20", "pop3://"+r.addr+"/", "-u", testUser+":"+testPassword).CombinedOutput()
			if err != nil || strings.Count(string(out), "\n") != 3 {
				t.Errorf("curl LIST = %q, %v", out, err)
			}
			// AUTH PLAIN instead of USER and PASS.
			out, err = exec.Command(curl, "-sS", "--max-time", "20", "pop3://"+r.addr+"/1", "--login-options", "AUTH=PLAIN",
				"-u", testUser+":"+testPassword).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "body 1") {
				t.Errorf("curl AUTH=PLAIN RETR 1 = %q, %v", out, err)
			}
		})
	}
}

// fetchmail downloads (and, as it does by default, deletes) every message
// from Dovecot through relayd into an mbox; a revoked grant then gets
// -ERR [AUTH] with the words to fix it.
func TestDovecotPOP3Fetchmail(t *testing.T) {
	fetchmail := realserver.RequireBinary(t, "fetchmail", "fetchmail")
	r := newPOP3Relay(t, startDovecotPOP3(t, config.SecurityTLS))
	dir := t.TempDir()
	host, port, _ := strings.Cut(r.addr, ":")
	mbox := filepath.Join(dir, "mbox")
	rc := filepath.Join(dir, "fetchmailrc")
	// fetchmail reads its password from a 0600 rc file when not on a
	// terminal.
	conf := fmt.Sprintf("poll %s protocol pop3 service %s auth password user %q password %q sslproto '' mda \"/bin/sh -c 'cat >> %s'\"\n",
		host, port, testUser, testPassword, mbox)
	if err := os.WriteFile(rc, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(fetchmail, "-f", rc, "--nodetach", "--nosyslog", "-v", "--pidfile", filepath.Join(dir, "pid"))
	cmd.Env = append(os.Environ(), "HOME="+dir, "FETCHMAILHOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("fetchmail: %v\n%s\nrelayd log:\n%s", err, out, r.logs.String())
	}
	got, _ := os.ReadFile(mbox)
	for i := 1; i <= 3; i++ {
		if !strings.Contains(string(got), fmt.Sprintf("body %d", i)) {
			t.Errorf("message %d is not in the mbox:\n%s\nfetchmail:\n%s", i, got, out)
		}
	}

	r.idp.Revoke(testMailbox)
	rw := r.raw()
	rw.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\n")
	rw.line()
	if got, want := rw.line(), `-ERR [AUTH] mailbox "support" needs reauthorization: run 'relayd authorize support'`; got != want {
		t.Errorf("revoked grant at Dovecot: %q, want %q", got, want)
	}
}
