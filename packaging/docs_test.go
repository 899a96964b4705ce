package packaging

import (
	"os"
	"strings"
	"testing"
)

// The set-up guide relayd-setup(7) covers each step an admin with only the
// package needs at Microsoft and at Google, and the package ships it and
// the README.
func TestManSetupGuide(t *testing.T) {
	b, err := os.ReadFile("man/relayd-setup.7.scd")
	if err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(string(b), `\_`, "_")
	for _, want := range []string{
		// Entra: account types and what tenant must then be.
		"single tenant", "multitenant", "personal Microsoft accounts", "AADSTS50194", "Directory (tenant) ID",
		"http://localhost", "Allow public client flows", "AADSTS7000218",
		// each permission and why
		"IMAP.AccessAsUser.All", "SMTP.Send", "POP.AccessAsUser.All", "Mail.Send", "offline_access", "openid", "profile",
		"Grant admin consent", "AADSTS65001", "SmtpClientAuthenticationDisabled",
		// shared mailbox rights
		"FullAccess", "SendAs", "SendAsDenied",
		// app-only with a certificate
		"client_certificate_file", "New-ServicePrincipal", "IMAP.AccessAsApp", "SMTP.SendAsApp", "RBAC for Applications",
		"AADSTS7000222",
		// Google
		"consent screen", "Internal", "External", "Testing", "test users", "7 days", "testing_app",
		"https://mail.google.com/", "restricted", "verif", "Desktop app", "client_secret_file", "redirect_uri_mismatch",
		"invalid_client", "access_denied", "domain-wide delegation", "Unique ID", "service_account_file",
		// the network
		"HTTPS_PROXY",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("relayd-setup(7) does not mention %q", want)
		}
	}

	recipe, err := os.ReadFile("nfpm.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mk, err := os.ReadFile("../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"dst: /usr/share/man/man7/relayd-setup.7.gz", "dst: /usr/share/doc/relayd/README.md.gz"} {
		if !strings.Contains(string(recipe), want) {
			t.Errorf("nfpm.yaml lacks %q", want)
		}
	}
	for _, want := range []string{"packaging/man/relayd-setup.7.scd", "README.md.gz"} {
		if !strings.Contains(string(mk), want) {
			t.Errorf("the Makefile does not build %s", want)
		}
	}
	for _, page := range []string{"man/relayd.8.scd", "man/relayd.toml.5.scd"} {
		b, err := os.ReadFile(page)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(b), "*relayd-setup*(7)") || !strings.Contains(string(b), "\n# EXAMPLES\n") {
			t.Errorf("%s has no EXAMPLES section or does not refer to relayd-setup(7)", page)
		}
	}
}
