package proxy

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/emersion/go-imap/v2"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
)

// startDovecot runs a real Dovecot whose oauth2 passdb checks tokens at the
// test's fake IdP, with three messages for testMailbox. The relay reaches it
// in plaintext, with implicit TLS or with STARTTLS.
func startDovecot(t *testing.T, sec config.Security) (*realserver.Dovecot, relayOpts) {
	return startDovecotOpts(t, sec, realserver.DovecotOptions{})
}

func startDovecotOpts(t *testing.T, sec config.Security, dopts realserver.DovecotOptions) (*realserver.Dovecot, relayOpts) {
	var d *realserver.Dovecot
	tls := sec == config.SecurityTLS
	o := relayOpts{tls: sec != config.SecurityNone, security: sec, upstream: func(idp *testkit.IdP) (string, []byte) {
		d = realserver.StartDovecot(t, idp, dopts)
		for i := 1; i <= 3; i++ {
			if err := d.Deliver(testMailbox, []byte(fmt.Sprintf("Subject: message %d\r\n\r\nbody %d\r\n", i, i))); err != nil {
				t.Fatal(err)
			}
		}
		if tls {
			return d.IMAPSAddr, d.CertPEM
		}
		return d.IMAPAddr, d.CertPEM
	}}
	return d, o
}

// curl, a real IMAP client, reads mail from Dovecot through relayd.
func TestDovecotCurl(t *testing.T) {
	curl := realserver.RequireBinary(t, "curl", "curl")
	for _, sec := range []config.Security{config.SecurityNone, config.SecurityTLS, config.SecuritySTARTTLS} {
		t.Run(string(sec), func(t *testing.T) {
			_, o := startDovecot(t, sec)
			r := newTestRelay(t, o)
			out, err := exec.Command(curl, "-sS", "--max-time", "20",
				"imap://"+r.addr+"/INBOX;UID=2", "-u", testUser+":"+testPassword).CombinedOutput()
			if err != nil {
				t.Fatalf("curl: %v: %s\nrelayd log:\n%s", err, out, r.logs.String())
			}
			if got, want := string(out), "Subject: message 2\r\n\r\nbody 2\r\n"; got != want {
				t.Errorf("curl fetched %q, want %q", got, want)
			}
			out, err = exec.Command(curl, "-sS", "--max-time", "20",
				"imap://"+r.addr+"/INBOX", "-u", testUser+":"+testPassword, "-X", "SEARCH ALL").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "* SEARCH 1 2 3") {
				t.Errorf("curl SEARCH = %q, %v", out, err)
			}
		})
	}
}

// imapclient logs in through relayd to Dovecot, gets Dovecot's capabilities,
// and a revoked grant produces Dovecot's JSON error challenge, which relayd
// answers correctly before telling the client what to do.
func TestDovecotCapabilitiesAndRevocation(t *testing.T) {
	_, o := startDovecot(t, config.SecurityNone)
	r := newTestRelay(t, o)
	c := r.login()
	if caps := c.Caps(); !caps.Has(imap.Cap("IDLE")) || !caps.Has(imap.Cap("CONDSTORE")) {
		t.Errorf("capabilities = %v, want Dovecot's (IDLE, CONDSTORE)", caps)
	}
	sel, err := c.Select("INBOX", &imap.SelectOptions{CondStore: true}).Wait()
	if err != nil || sel.NumMessages != 3 || sel.HighestModSeq == 0 {
		t.Fatalf("SELECT (CONDSTORE) = %+v, %v", sel, err)
	}
	c.Logout().Wait()

	r.idp.Revoke(testMailbox)
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	want := `a NO [AUTHENTICATIONFAILED] mailbox "support" needs reauthorization: run 'relayd authorize support'`
	if got := rw.line(); got != want {
		t.Errorf("reply = %q, want %q\nrelayd log:\n%s", got, want, r.logs.String())
	}
	if !strings.Contains(r.logs.String(), "upstream rejected the access token; refreshing once") {
		t.Errorf("relayd did not see Dovecot's rejection:\n%s", r.logs.String())
	}
}

// Provider "password": relayd logs in upstream with AUTHENTICATE PLAIN and
// the account's password (Dovecot's static passdb here), and a wrong
// password is an account condition an admin must fix.
func TestDovecotPasswordProvider(t *testing.T) {
	const upstreamPassword = "upstream-static-pw"
	_, o := startDovecotOpts(t, config.SecurityTLS, realserver.DovecotOptions{Password: upstreamPassword})
	o.password = upstreamPassword
	r := newTestRelay(t, o)
	c := r.login()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil || sel.NumMessages != 3 {
		t.Fatalf("SELECT = %v, %v", sel, err)
	}
	c.Logout().Wait()

	_, o = startDovecotOpts(t, config.SecurityTLS, realserver.DovecotOptions{Password: upstreamPassword})
	o.password = "not-the-upstream-password"
	r = newTestRelay(t, o)
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	got := rw.line()
	// The client learns that an admin must act; the password file's path
	// is for the admin's eyes (log, status), never the client's.
	if got != `a NO [AUTHENTICATIONFAILED] mailbox "support" needs an administrator: see 'relayd status'` {
		t.Errorf("reply = %q", got)
	}
	if !strings.Contains(r.logs.String(), "refused the password in ") || strings.Contains(got, ".password") {
		t.Errorf("the log should name the password file, the reply not: %q", got)
	}
	if strings.Contains(got, "not-the-upstream-password") || strings.Contains(r.logs.String(), "not-the-upstream-password") {
		t.Error("the upstream password leaked into a reply or the log")
	}
}
