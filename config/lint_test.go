package config

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
)

// lintDoc is an account that Lint finds nothing wrong with, for each
// case below to break.
const lintDoc = `[[account]]
name = "a"
provider = "office365"
tenant = "1d3f8a52-6c1b-4f6e-9a0e-2b7c5d8e9f01"
email = "support@helpdesk.test"
client_id = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"
local_password_hash = "` + hash + `"
`

// Each case of what check-config catches, with its key and the fix in
// the message; Parse accepts every one of them (the example file must
// parse), Lint names it.
func TestLint(t *testing.T) {
	cfg, err := Parse(lintDoc)
	if err != nil {
		t.Fatal(err)
	}
	if ps := cfg.Lint(); len(ps) != 0 {
		t.Fatalf("Lint() of a good account = %v", ps)
	}
	gmail := strings.NewReplacer(`provider = "office365"`, `provider = "gmail"`, "tenant = \"1d3f8a52-6c1b-4f6e-9a0e-2b7c5d8e9f01\"\n", "").Replace(lintDoc)
	for _, tc := range []struct {
		name, doc, old, new string
		want                string // regexp over the problems, one per line
		warning             bool
	}{
		{"the example's hash", lintDoc, hash, ExampleHash, `^account\[1\]\.local_password_hash: this is the example file's hash, of the password "change-me".*relayd hash-password`, false},
		{"client id ...", lintDoc, `client_id = "3f2504e0-4f89-11d3-9a0c-0305e82c3301"`, `client_id = "..."`, `^account\[1\]\.client_id: "\.\.\." is a placeholder: put the Application \(client\) ID of your app registration`, false},
		{"client id of zeros", lintDoc, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "00000000-0000-0000-0000-000000000000", `client_id: "00000000-0000-0000-0000-000000000000" is a placeholder`, false},
		{"YOUR_CLIENT_ID", lintDoc, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "YOUR_CLIENT_ID", `client_id: "YOUR_CLIENT_ID" is a placeholder`, false},
		{"<client-id>", lintDoc, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "<client-id>", `client_id: "<client-id>" is a placeholder`, false},
		{"gmail client id placeholder", gmail, "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "your-client-id.apps.googleusercontent.com", `client_id: .* is a placeholder: put the Client ID of your OAuth client \(Google Cloud console`, false},
		{"example tenant", lintDoc, "1d3f8a52-6c1b-4f6e-9a0e-2b7c5d8e9f01", "contoso.onmicrosoft.com", `^account\[1\]\.tenant: "contoso.onmicrosoft.com" is a placeholder: put your tenant's id`, false},
		{"example mailbox", lintDoc, "support@helpdesk.test", "support@contoso.com", `^account\[1\]\.email: "support@contoso.com" is an example address`, false},
		{"no tenant", lintDoc, "tenant = \"1d3f8a52-6c1b-4f6e-9a0e-2b7c5d8e9f01\"\n", "", `^account\[1\]\.tenant: not set, so relayd signs in through "organizations".*single-tenant registration, Entra's default, fails at sign-in with AADSTS50194: set tenant`, true},
		{"gmail without a client secret", gmail, "", "", `^account\[1\]\.client_secret_file: required for a Gmail account with grant "refresh_token".*invalid_client`, false},
		{"gmail.send", gmail + "client_secret_file = \"/s\"\n", "", "scopes = [\"https://www.googleapis.com/auth/gmail.send\"]\n", `(?s)scopes: "https://www.googleapis.com/auth/gmail.send" is a Gmail API scope, which IMAP and SMTP refuse: use "https://mail.google.com/".*scopes: lacks "https://mail.google.com/"`, false},
		{"gmail.readonly", gmail + "client_secret_file = \"/s\"\n", "", "scopes = [\"https://mail.google.com/\", \"https://www.googleapis.com/auth/gmail.readonly\"]\n", `scopes: "https://www.googleapis.com/auth/gmail.readonly" is a Gmail API scope`, false},
		{"no IMAP scope", lintDoc, "", "direction = \"incoming\"\nscopes = [\"https://outlook.office.com/SMTP.Send\", \"offline_access\"]\n", `^account\[1\]\.scopes: lacks "https://outlook.office.com/IMAP.AccessAsUser.All", without which Exchange refuses the IMAP login`, false},
		{"no SMTP scope", lintDoc, "", "direction = \"outgoing\"\nscopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\", \"offline_access\"]\n", `^account\[1\]\.scopes: lacks "https://outlook.office.com/SMTP.Send", without which Exchange refuses the SMTP login`, false},
		{"no POP scope while POP3 listens", "[pop3]\nlisten = [\"127.0.0.1:1110\"]\n" + lintDoc, "", "direction = \"incoming\"\nscopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\", \"offline_access\"]\n", `^account\[1\]\.scopes: lacks "https://outlook.office.com/POP.AccessAsUser.All", without which Exchange refuses the POP3 login`, false},
		{"Graph scope in scopes", lintDoc, "", "scopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\", \"https://outlook.office.com/SMTP.Send\", \"offline_access\", \"https://graph.microsoft.com/Mail.Send\"]\n", `scopes: "https://graph.microsoft.com/Mail.Send" is a Microsoft Graph permission.*AADSTS28000.*transport = "graph"`, false},
		{"bare scope is Graph's", lintDoc, "", "scopes = [\"IMAP.AccessAsUser.All\", \"https://outlook.office.com/SMTP.Send\", \"offline_access\"]\n", `(?s)scopes: "IMAP.AccessAsUser.All" is a Microsoft Graph permission.*lacks "https://outlook.office.com/IMAP.AccessAsUser.All"`, false},
		{"no offline_access", lintDoc, "", "scopes = [\"https://outlook.office.com/IMAP.AccessAsUser.All\", \"https://outlook.office.com/SMTP.Send\"]\n", `scopes: lacks "offline_access": without it Microsoft issues no refresh token`, false},
		{"app-only with a delegated scope", lintDoc, "", "grant = \"client_credentials\"\nclient_secret_file = \"/s\"\nscopes = [\"https://outlook.office.com/SMTP.Send\"]\n", `scopes: "https://outlook.office.com/SMTP.Send" cannot be asked for by an app-only grant.*\.default`, false},
		{"graph_scopes of the mail resource", lintDoc, "", "transport = \"graph\"\ngraph_scopes = [\"https://outlook.office.com/SMTP.Send\"]\n", `graph_scopes: "https://outlook.office.com/SMTP.Send" is a permission of the IMAP and SMTP resource, not Graph's`, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			doc := tc.doc
			if tc.old != "" {
				if !strings.Contains(doc, tc.old) {
					t.Fatalf("%q not in the document", tc.old)
				}
				doc = strings.Replace(doc, tc.old, tc.new, 1)
			} else {
				doc += tc.new
			}
			cfg, err := Parse(doc)
			if err != nil {
				t.Fatalf("Parse() = %v, want it accepted (check-config, not Parse, refuses this)", err)
			}
			var lines []string
			warning := false
			for _, p := range cfg.Lint() {
				lines = append(lines, p.String())
				if regexp.MustCompile(tc.want).MatchString(p.String()) {
					warning = p.Warning
				}
			}
			got := strings.Join(lines, "\n")
			if !regexp.MustCompile(`(?m)` + tc.want).MatchString(got) {
				t.Fatalf("Lint() =\n%s\nwant a problem matching %s", got, tc.want)
			}
			if warning != tc.warning {
				t.Errorf("Lint() problem %q: Warning = %v, want %v", got, warning, tc.warning)
			}
		})
	}
}

// The example file parses (Parse), and Lint names every placeholder in
// it: check-config refuses it as shipped until they are filled in.
func TestLintExample(t *testing.T) {
	b, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := Parse(string(b))
	if err != nil {
		t.Fatalf("Parse(config.example.toml) = %v", err)
	}
	var keys []string
	for _, p := range cfg.Lint() {
		if !p.Warning {
			keys = append(keys, p.Key)
		}
	}
	want := []string{
		"account[1].local_password_hash", "account[1].client_id", "account[1].tenant", "account[1].email", "account[1].login",
		"account[2].local_password_hash", "account[2].email", "account[2].imap_server",
	}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("Lint(config.example.toml) names %q, want %q", keys, want)
	}
}

// A hash with whitespace inside passes bcrypt.Cost but never matches:
// Parse refuses it (serve too), naming where the whitespace is.
func TestParseRefusesHashWithWhitespace(t *testing.T) {
	for _, h := range []string{hash[:20] + "\t" + hash[20:], hash + " ", " " + hash, hash[:30] + "\n" + hash[30:]} {
		_, err := Parse(strings.Replace(lintDoc, hash, strings.NewReplacer("\t", `\t`, "\n", `\n`).Replace(h), 1))
		if err == nil || !strings.Contains(err.Error(), "account[1].local_password_hash: holds whitespace") || !strings.Contains(err.Error(), "relayd hash-password") {
			t.Errorf("Parse() with hash %q = %v, want a refusal naming the whitespace", h, err)
		}
	}
}

func TestIsPlaceholder(t *testing.T) {
	for s, want := range map[string]bool{
		"...": true, "…": true, "00000000-0000-0000-0000-000000000000": true, "YOUR_CLIENT_ID": true, "your-client-id": true,
		"<client-id>": true, "{client_id}": true, "client_id": true, "CHANGEME": true, "xxxxxxxx-xxxx": true, "TODO": true,
		"3f2504e0-4f89-11d3-9a0c-0305e82c3301": false, "1234-abcd.apps.googleusercontent.com": false, "client": false, "mycompany.onmicrosoft.com": false,
		"relayd-helpdesk": false,
	} {
		if got := isPlaceholder(s); got != want {
			t.Errorf("isPlaceholder(%q) = %v, want %v", s, got, want)
		}
	}
}

// A redirect_uri that does not reach the console as listen serves it is
// a warning: another scheme or port than the console's.
func TestLintWebRedirect(t *testing.T) {
	for _, c := range []struct {
		web  Web
		want string
	}{
		{Web{Listen: "127.0.0.1:8025", RedirectURI: "http://localhost:8025/oauth/callback"}, ""},
		{Web{Listen: "127.0.0.1:8025", RedirectURI: "http://localhost:9000/oauth/callback"}, "names port 9000"},
		{Web{Listen: "0.0.0.0:8443", CertFile: "/c", KeyFile: "/k", RedirectURI: "https://relay.example.net:8443/oauth/callback"}, ""},
		{Web{Listen: "0.0.0.0:8443", CertFile: "/c", KeyFile: "/k", RedirectURI: "http://localhost:8443/oauth/callback"}, "is http, but the console serves https"},
		{Web{Listen: "0.0.0.0:443", RedirectURI: "https://relay.example.net/oauth/callback"}, "is https, but the console serves http"},
	} {
		var got []Problem
		lintWeb(c.web, func(warning bool, key, format string, args ...any) {
			got = append(got, Problem{Key: key, Msg: fmt.Sprintf(format, args...), Warning: warning})
		})
		switch {
		case c.want == "" && len(got) > 0:
			t.Errorf("%+v: %v, want nothing", c.web, got)
		case c.want != "" && (len(got) != 1 || !strings.Contains(got[0].Msg, c.want) || !got[0].Warning):
			t.Errorf("%+v: %v, want a warning with %q", c.web, got, c.want)
		}
	}
}
