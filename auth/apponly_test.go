package auth

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// The fake IdP checks what a provider checks; relayd's tokens pass, and a
// credential it does not accept is an admin's matter, said in words.
func TestAppOnlyRefusals(t *testing.T) {
	idp := newIdP(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		f := filepath.Join(dir, name)
		os.WriteFile(f, b, 0o600)
		return f
	}
	saKey, _ := idp.AddServiceAccount("relay@project.iam.gserviceaccount.com", "support@example.com")
	cert, key, _ := idp.AddClientCertificate("certclient")
	_, otherKey, _ := idp.AddClientCertificate("otherclient")
	idp.GrantApp("certclient", "support@example.com")
	for _, tc := range []struct {
		name  string
		acct  testkit.Account
		works bool
		want  string
	}{
		{"service account", testkit.Account{Provider: "gmail", Email: "support@example.com", Grant: "service_account", ServiceAccountFile: write("sa.json", saKey)}, true, ""},
		{"service account, mailbox not delegated", testkit.Account{Provider: "gmail", Email: "other@example.com", Grant: "service_account", ServiceAccountFile: write("sa.json", saKey)}, false, "domain-wide delegation"},
		{"certificate", testkit.Account{Provider: "custom", Email: "support@example.com", ClientID: "certclient", Grant: "client_credentials",
			ClientCertificateFile: write("c.crt", cert), ClientKeyFile: write("c.key", key)}, true, ""},
		{"certificate with a key that is not its own", testkit.Account{Provider: "custom", Email: "support@example.com", ClientID: "certclient", Grant: "client_credentials",
			ClientCertificateFile: write("c.crt", cert), ClientKeyFile: write("o.key", otherKey)}, false, "AADSTS700027"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := tc.acct
			a.Name, a.TokenURL, a.Direction, a.SMTPServer, a.LocalPasswordHash = "support", idp.TokenURL(), "outgoing", "127.0.0.1:587", testkit.UnusedHash
			src, err := NewSource(SourceOptions{Account: a.Parsed(t), Store: &Store{Dir: t.TempDir()}})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := src.Token(context.Background())
			if tc.works {
				if err != nil || !idp.Validate(tok, "support@example.com") {
					t.Fatalf("Token() = %v; want a token the upstream accepts", err)
				}
				return
			}
			he := health.AsError(err)
			if he == nil || he.State != health.StateNeedsAdmin || !strings.Contains(he.Advice, tc.want) {
				t.Fatalf("Token() = %v; want needs_admin naming %q", err, tc.want)
			}
			if strings.Contains(he.Error(), "PRIVATE KEY") {
				t.Error("the key reached an error text")
			}
		})
	}
}
