package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/internal/testkit"
)

// App-only grants need no person: relayd authorize checks them, and mail
// goes out with their tokens. The IdP checks each JWT's signature against
// the public key it was given, the certificate's x5t#S256 header and the
// service account's sub.
func TestAppOnlyGrants(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(e *env, a *testkit.Account)
		grant string
	}{
		{"google service account", func(e *env, a *testkit.Account) {
			key, err := e.idp.AddServiceAccount("relay@project.iam.gserviceaccount.com", mbox)
			if err != nil {
				t.Fatal(err)
			}
			f := filepath.Join(e.dir, "sa.json")
			os.WriteFile(f, key, 0o600)
			a.Provider, a.Grant, a.ServiceAccountFile, a.ClientID, a.ClientSecretFile = "gmail", "service_account", f, "", ""
			e.secrets = append(e.secrets, secretPart(key))
		}, "service_account"},
		{"microsoft certificate", func(e *env, a *testkit.Account) {
			cert, key, err := e.idp.AddClientCertificate("certclient")
			if err != nil {
				t.Fatal(err)
			}
			e.idp.GrantApp("certclient", mbox)
			cf, kf := filepath.Join(e.dir, "app.crt"), filepath.Join(e.dir, "app.key")
			os.WriteFile(cf, cert, 0o600)
			os.WriteFile(kf, key, 0o600)
			a.Grant, a.ClientID, a.ClientSecretFile, a.ClientCertificateFile, a.ClientKeyFile = "client_credentials", "certclient", "", cf, kf
			e.secrets = append(e.secrets, secretPart(key))
		}, "client_credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			up, err := testkit.NewSMTPUpstream(e.idp, testkit.SMTPOptions{})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { up.Close() })
			smtpAddr := e.writeSMTPConfig(up.Addr, "50ms", "200ms")
			tc.setup(e, &e.conf.Accounts[0])
			e.writeConfig()
			out, code := e.run("authorize", "-c", e.cfg, "support")
			if code != 0 || !strings.Contains(out, "the app-only credentials ("+tc.grant+") work") {
				t.Fatalf("authorize: exit %d\n%s", code, out)
			}
			d := e.serve()
			c, err := smtp.Dial(smtpAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if err := c.Auth(sasl.NewPlainClient("", "helpdesk", localPassword)); err != nil {
				t.Fatal(err)
			}
			if err := c.SendMail(mbox, []string{"x@example.net"}, strings.NewReader("Subject: app-only\r\n\r\nsent with an app-only token\r\n")); err != nil {
				t.Fatal(err)
			}
			if got := up.WaitMessages(t, 1, 30*time.Second); !strings.Contains(string(got[0].Data), "sent with an app-only token") {
				t.Errorf("delivered %q\n%s", got[0].Data, d.stderr.String())
			}
			e.record("relayd serve stderr (app-only)", []byte(d.stderr.String()))
			if n := e.sweepSecrets(); n < 3 {
				t.Errorf("only %d secrets swept", n)
			}
		})
	}
}

// secretPart is a run of a private key's PEM body: it must appear nowhere
// relayd writes.
func secretPart(b []byte) string {
	s := string(b)
	if i := strings.Index(s, "-----\n"); i >= 0 {
		s = s[i+6:]
	} else if i := strings.Index(s, `-----\n`); i >= 0 {
		s = s[i+7:]
	}
	if len(s) > 40 {
		s = s[20:60]
	}
	return s
}
