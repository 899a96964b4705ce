package config

import (
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"
)

const hash = "$2a$10$abcdefghijklmnopqrstuuJ5yH0pQ8f1Hb2oQFv6v9y3a9d3L8r2W"

const good = `
state_dir = "/tmp/relayd-state"
[imap]
listen = ["127.0.0.1:1143", "[::1]:1143"]
idle_timeout = "45m"
[[account]]
name = "support"
provider = "office365"
email = "support@contoso.com"
login = "agent@contoso.com"
tenant = "contoso.onmicrosoft.com"
client_id = "cid"
local_password_hash = "` + hash + `"
`

func TestParseGood(t *testing.T) {
	cfg, err := Parse(good)
	if err != nil {
		t.Fatalf("Parse() = %v, want nil", err)
	}
	if cfg.StateDir != "/tmp/relayd-state" || cfg.StatusSocket != "/run/relayd/status.sock" {
		t.Errorf("dirs = %q %q", cfg.StateDir, cfg.StatusSocket)
	}
	if cfg.IMAP.IdleTimeout != 45*time.Minute || cfg.IMAP.PreauthTimeout != time.Minute {
		t.Errorf("timeouts = %v %v", cfg.IMAP.IdleTimeout, cfg.IMAP.PreauthTimeout)
	}
	a := cfg.Account("support")
	if a == nil {
		t.Fatal("account support missing")
	}
	want := Account{
		Name: "support", Provider: "office365", Email: "support@contoso.com", Login: "agent@contoso.com",
		Tenant: "contoso.onmicrosoft.com", ClientID: "cid", Grant: GrantRefreshToken, Direction: DirBoth,
		LocalUser: "support@contoso.com", LocalPasswordHash: hash,
		TokenURL:      "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token",
		AuthURL:       "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
		DeviceAuthURL: "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/devicecode",
		IMAPServer:    "outlook.office365.com:993", SMTPServer: "smtp.office365.com:587",
		IMAPSecurity: SecurityTLS, SMTPSecurity: SecuritySTARTTLS,
		POP3Server: "outlook.office365.com:995", POP3Security: SecurityTLS,
		SMTPConnections: 3, SMTPRate: 30, IMAPConnections: 20, TokenAuthInParams: true,
		WarmConnections: 1, UpstreamPreauthTimeout: time.Minute,
		Transport: "smtp", FallbackAfter: 15 * time.Minute, FallbackFrom: "rewrite",
		Issuer: "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0",
		Flow:   "device", DeviceFlow: true, AuthParams: map[string]string{"prompt": "select_account"}, RedirectHost: "localhost",
		IdleLifetime: 90 * 24 * time.Hour,
	}
	got := *a
	got.Scopes = nil
	if !reflect.DeepEqual(got, want) {
		t.Errorf("account =\n%+v\nwant\n%+v", got, want)
	}
	if !strings.Contains(strings.Join(a.Scopes, " "), "IMAP.AccessAsUser.All") {
		t.Errorf("scopes = %v, want Microsoft's IMAP scope", a.Scopes)
	}
}

func TestPresets(t *testing.T) {
	for _, tc := range []struct {
		provider, grant, imap, smtp, token, scope string
		imapConns                                 int
	}{
		{"outlook", "", "outlook.office365.com:993", "smtp-mail.outlook.com:587", "https://login.microsoftonline.com/consumers/oauth2/v2.0/token", "offline_access", 20},
		{"gmail", "", "imap.gmail.com:993", "smtp.gmail.com:465", "https://oauth2.googleapis.com/token", "https://mail.google.com/", 15},
		{"office365", "client_credentials", "outlook.office365.com:993", "smtp.office365.com:587", "https://login.microsoftonline.com/contoso.com/oauth2/v2.0/token", "https://outlook.office365.com/.default", 20},
	} {
		doc := `[[account]]
name = "a"
provider = "` + tc.provider + `"
email = "a@contoso.com"
client_id = "c"
tenant = "contoso.com"
local_password_hash = "` + hash + `"
`
		if tc.grant != "" {
			doc += "grant = \"" + tc.grant + "\"\nclient_secret_file = \"/etc/secret\"\n"
		}
		if tc.provider != "office365" {
			doc = strings.Replace(doc, `tenant = "contoso.com"`, "", 1)
		}
		cfg, err := Parse(doc)
		if err != nil {
			t.Errorf("%s: Parse() = %v", tc.provider, err)
			continue
		}
		a := cfg.Accounts[0]
		if a.IMAPServer != tc.imap || a.SMTPServer != tc.smtp || a.TokenURL != tc.token {
			t.Errorf("%s: servers %s %s %s", tc.provider, a.IMAPServer, a.SMTPServer, a.TokenURL)
		}
		if !strings.Contains(strings.Join(a.Scopes, " "), tc.scope) {
			t.Errorf("%s: scopes %v lack %s", tc.provider, a.Scopes, tc.scope)
		}
		if a.IMAPConnections != tc.imapConns {
			t.Errorf("%s: imap_connections %d, want %d", tc.provider, a.IMAPConnections, tc.imapConns)
		}
	}
}

// Every error names its key.
func TestParseErrors(t *testing.T) {
	acct := func(extra string) string {
		return "[[account]]\nname = \"a\"\nprovider = \"custom\"\nemail = \"a@example.com\"\nclient_id = \"c\"\n" +
			"token_url = \"http://127.0.0.1/token\"\nimap_server = \"127.0.0.1:993\"\nsmtp_server = \"127.0.0.1:587\"\nlocal_password_hash = \"" + hash + "\"\n" + extra
	}
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown top key", "stat_dir = \"/x\"\n", `^stat_dir: unknown key$`},
		{"unknown section key", "[imap]\nlisten_on = [\"127.0.0.1:1\"]\n", `^imap.listen_on: unknown key$`},
		{"unknown account key", acct("") + acct("colour = \"red\"\n"), `^account\[2\].colour: unknown key$`},
		{"provider typo", strings.Replace(acct(""), `"custom"`, `"office356"`, 1), `^account\[1\].provider: unknown provider "office356" \(did you mean "office365"\?\)$`},
		{"provider missing", strings.Replace(acct(""), `provider = "custom"`, "", 1), `^account\[1\].provider: required`},
		{"name missing", strings.Replace(acct(""), `name = "a"`, "", 1), `^account\[1\].name: required`},
		{"name with slash", strings.Replace(acct(""), `name = "a"`, `name = "a/b"`, 1), `^account\[1\].name: "a/b" is not allowed: use up to 64 ASCII letters, digits`},
		{"name with NUL", strings.Replace(acct(""), `name = "a"`, `name = "a\u0000b"`, 1), `^account\[1\].name: "a\\x00b" is not allowed`},
		{"name with CR", strings.Replace(acct(""), `name = "a"`, `name = "a\rb"`, 1), `^account\[1\].name: "a\\rb" is not allowed`},
		{"name with ESC", strings.Replace(acct(""), `name = "a"`, `name = "a\u001b[2Jb"`, 1), `^account\[1\].name: "a\\x1b\[2Jb" is not allowed`},
		{"name too long", strings.Replace(acct(""), `name = "a"`, `name = "`+strings.Repeat("a", 300)+`"`, 1), `^account\[1\].name: "a{80}"… \(300 bytes\) is not allowed`},
		{"name starting with a dot", strings.Replace(acct(""), `name = "a"`, `name = ".a"`, 1), `^account\[1\].name: ".a" is not allowed`},
		{"email with a newline", strings.Replace(acct(""), `email = "a@example.com"`, `email = "a@example.com\nBcc: x@evil.example"`, 1), `^account\[1\].email: "a@example.com\\nBcc: x@evil.example" holds a control character`},
		{"login with CR", acct("login = \"a@example.com\\r\"\n"), `^account\[1\].login: "a@example.com\\r" holds a control character`},
		{"local user with ESC", acct("local_user = \"a\\u001b\"\n"), `^account\[1\].local_user: "a\\x1b" holds a control character`},
		{"send_as with a newline", acct("send_as = [\"b@example.com\\n\"]\n"), `^account\[1\].send_as\[0\]: "b@example.com\\n" holds a control character`},
		{"duplicate name", acct("") + strings.Replace(acct(""), "a@", "b@", 2), `^account\[2\].name: "a" is already the name of account\[1\]`},
		{"duplicate local user", acct("") + strings.Replace(acct(""), `name = "a"`, `name = "b"`, 1), `^account\[2\].local_user: "a@example.com" is already`},
		{"email", strings.Replace(acct(""), "a@example.com", "nobody", 1), `^account\[1\].email: "nobody" is not an email address`},
		{"hash missing", strings.Replace(acct(""), "local_password_hash", "#", 1), `^account\[1\].local_password_hash: required: create one with 'relayd hash-password'`},
		{"hash not bcrypt", strings.Replace(acct(""), hash, "secret", 1), `^account\[1\].local_password_hash: not a bcrypt hash`},
		{"direction", acct("direction = \"out\"\n"), `^account\[1\].direction: unknown direction "out"`},
		{"security", acct("imap_security = \"ssl\"\n"), `^account\[1\].imap_security: unknown security "ssl"`},
		{"plaintext remote", strings.Replace(acct("imap_security = \"none\"\n"), "127.0.0.1:993", "mail.example.com:143", 1), `^account\[1\].imap_security: "none" sends tokens in the clear`},
		{"server not host:port", strings.Replace(acct(""), "127.0.0.1:993", "mail.example.com", 1), `^account\[1\].imap_server: "mail.example.com" is not host:port`},
		{"client id", strings.Replace(acct(""), `client_id = "c"`, "", 1), `^account\[1\].client_id: required`},
		{"token url", strings.Replace(acct(""), `token_url = "http://127.0.0.1/token"`, "", 1), `^account\[1\].token_url: required for provider "custom"`},
		{"grant", acct("grant = \"implicit\"\n"), `^account\[1\].grant: unknown grant "implicit"`},
		{"cc without secret", acct("grant = \"client_credentials\"\n"), `^account\[1\].client_secret_file: grant "client_credentials" needs client_secret_file or client_certificate_file`},
		{"smtp server missing", strings.Replace(acct(""), `smtp_server = "127.0.0.1:587"`, "", 1), `^account\[1\].smtp_server: required for an account with direction "both"`},
		{"send_as", acct("send_as = [\"nobody\"]\n"), `^account\[1\].send_as\[0\]: "nobody" is not an email address`},
		{"queue retry order", "[queue]\nretry_min = \"1h\"\nretry_max = \"1m\"\n", `^queue.retry_max: 1m0s is shorter than queue.retry_min`},
		{"max size", "[smtp]\nmax_message_size = 10\n", `^smtp.max_message_size: 10 is too small`},
		{"password without file", "[[account]]\nname = \"p\"\nprovider = \"password\"\nemail = \"p@example.com\"\ndirection = \"incoming\"\nimap_server = \"127.0.0.1:993\"\nlocal_password_hash = \"" + hash + "\"\n", `^account\[1\].password_file: required`},
		{"listen not loopback", "[imap]\nlisten = [\"0.0.0.0:143\"]\n", `^imap.listen\[0\]: "0.0.0.0" is not a loopback address: a listener beyond loopback needs TLS.*set imap.tls_cert and imap.tls_key`},
		{"smtp listen not loopback", "[smtp]\nlisten = [\"192.168.1.5:587\"]\n", `^smtp.listen\[0\]: "192.168.1.5" is not a loopback address: a listener beyond loopback needs TLS.*set smtp.tls_cert and smtp.tls_key`},
		{"listen_tls without cert", "[imap]\nlisten_tls = [\"127.0.0.1:993\"]\n", `^imap.listen_tls\[0\]: "127.0.0.1:993": implicit TLS needs a certificate: set imap.tls_cert and imap.tls_key`},
		{"pop3 listen not loopback", "[pop3]\nlisten = [\"0.0.0.0:110\"]\n", `^pop3.listen\[0\]: "0.0.0.0" is not a loopback address: a listener beyond loopback needs TLS.*set pop3.tls_cert and pop3.tls_key`},
		{"pop3 listen_tls without cert", "[pop3]\nlisten_tls = [\"127.0.0.1:995\"]\n", `^pop3.listen_tls\[0\]: "127.0.0.1:995": implicit TLS needs a certificate: set pop3.tls_cert and pop3.tls_key`},
		{"pop3 allow_from", "[pop3]\nallow_from = [\"10.0.0.1/8\"]\n", `^pop3.allow_from\[0\]: "10.0.0.1/8" has host bits set`},
		{"pop3 listen_tls duplicate", "[pop3]\nlisten = [\"127.0.0.1:1110\"]\ntls_cert = \"/c\"\ntls_key = \"/k\"\nlisten_tls = [\"127.0.0.1:1110\"]\n", `^pop3.listen_tls\[0\]: "127.0.0.1:1110" is already pop3.listen\[0\]`},
		{"tls_cert without key", "[smtp]\ntls_cert = \"/etc/relayd/cert.pem\"\n", `^smtp.tls_key: missing`},
		{"tls_cert relative", "[imap]\ntls_cert = \"cert.pem\"\ntls_key = \"/k.pem\"\n", `^imap.tls_cert: "cert.pem": give an absolute path`},
		{"allow_from", "[imap]\nallow_from = [\"192.168.1.1/24\"]\n", `^imap.allow_from\[0\]: "192.168.1.1/24" has host bits set: did you mean "192.168.1.0/24"\?`},
		{"allow_from garbage", "[smtp]\nallow_from = [\"lan\"]\n", `^smtp.allow_from\[0\]: "lan" is neither a network`},
		{"listen_tls duplicate", "[imap]\ntls_cert = \"/c\"\ntls_key = \"/k\"\nlisten_tls = [\"127.0.0.1:1143\"]\n", `^imap.listen_tls\[0\]: "127.0.0.1:1143" is already imap.listen\[0\]`},
		{"smtp listen", "[smtp]\nlisten = [\"1587\"]\n", `^smtp.listen\[0\]: "1587" is not host:port`},
		{"duration", "[imap]\nidle_timeout = \"soon\"\n", `^imap.idle_timeout: "soon" is not a positive duration`},
		{"log level", "[log]\nlevel = \"loud\"\n", `^log.level: unknown level "loud"`},
		{"login failures", "[login]\nmax_failures = 0\n", `^login.max_failures: 0: give at least 1`},
		{"lockout", "[login]\nlockout = \"forever\"\n", `^login.lockout: "forever" is not a positive duration`},
		{"session limit", "[smtp]\nmax_sessions = -1\n", `^smtp.max_sessions: must not be negative`},
		{"address limit", "[imap]\nmax_sessions_per_address = -5\n", `^imap.max_sessions_per_address: must not be negative`},
		{"account limit", acct("imap_connections = -1\n"), `^account\[1\].imap_connections: must not be negative`},
		{"limit type", "[imap]\nmax_sessions = \"many\"\n", `^imap.max_sessions: `},
		{"smtp timeout", "[smtp]\ntimeout = \"0s\"\n", `^smtp.timeout: "0s" is not a positive duration`},
		{"write timeout", "[imap]\nwrite_timeout = \"x\"\n", `^imap.write_timeout: `},
		{"syntax", "state_dir = \n", `^line 1: `},
		{"transport", acct("transport = \"ews\"\n"), `^account\[1\].transport: unknown transport "ews" \(use smtp or graph\)`},
		{"graph for gmail", "[[account]]\nname = \"g\"\nprovider = \"gmail\"\nemail = \"g@example.com\"\nclient_id = \"c\"\nlocal_password_hash = \"" + hash + "\"\ntransport = \"graph\"\n", `^account\[1\].transport: "graph" is Microsoft Graph, which provider "gmail" does not have`},
		{"graph for incoming", acct("transport = \"graph\"\ndirection = \"incoming\"\n"), `^account\[1\].transport: "graph" sends mail, but the account's direction is "incoming"`},
		{"graph url without graph", acct("graph_url = \"https://graph.microsoft.us\"\n"), `^account\[1\].graph_url: only used with transport = "graph"`},
		{"graph url in the clear", acct("transport = \"graph\"\ngraph_url = \"http://graph.example.com\"\n"), `^account\[1\].graph_url: "http://graph.example.com" sends tokens in the clear`},
		{"graph url not a url", acct("transport = \"graph\"\ngraph_url = \"graph.microsoft.com\"\n"), `^account\[1\].graph_url: "graph.microsoft.com" is not an http\(s\) URL`},
		{"graph url with a path", acct("transport = \"graph\"\ngraph_url = \"https://graph.microsoft.com/v1.0\"\n"), `^account\[1\].graph_url: "https://graph.microsoft.com/v1.0": give only the scheme and host`},
		{"graph url with a password", acct("transport = \"graph\"\ngraph_url = \"https://u:p@graph.example.com\"\n"), `^account\[1\].graph_url: must not hold a user name or password`},
		{"graph scopes empty", acct("transport = \"graph\"\ngraph_scopes = []\n"), `^account\[1\].graph_scopes: is empty`},
		{"fallback mode without fallback", acct("fallback_from = \"keep\"\n"), `^account\[1\].fallback_from: only used with fallback_account`},
		{"fallback after without fallback", acct("fallback_after = \"5m\"\n"), `^account\[1\].fallback_after: only used with fallback_account`},
		{"fallback mode", acct("fallback_account = \"b\"\nfallback_from = \"spoof\"\n") + strings.NewReplacer(`name = "a"`, `name = "b"`, "a@", "b@").Replace(acct("")), `^account\[1\].fallback_from: unknown mode "spoof" \(use rewrite or keep\)`},
		{"fallback after", acct("fallback_account = \"b\"\nfallback_after = \"soon\"\n") + strings.NewReplacer(`name = "a"`, `name = "b"`, "a@", "b@").Replace(acct("")), `^account\[1\].fallback_after: "soon" is not a duration`},
		{"fallback to itself", acct("fallback_account = \"a\"\n"), `^account\[1\].fallback_account: account "a" cannot be its own fallback`},
		{"fallback unknown", acct("fallback_account = \"zz\"\n"), `^account\[1\].fallback_account: no account is named "zz"`},
		{"fallback incoming only", acct("fallback_account = \"b\"\n") + strings.NewReplacer(`name = "a"`, `name = "b"`, "a@", "b@").Replace(acct("direction = \"incoming\"\n")), `^account\[1\].fallback_account: account "b" only receives mail`},
		{"fallback of a fallback", acct("fallback_account = \"b\"\n") + strings.NewReplacer(`name = "a"`, `name = "b"`, "a@", "b@").Replace(acct("fallback_account = \"c\"\n")) + strings.NewReplacer(`name = "a"`, `name = "c"`, "a@", "c@").Replace(acct("")), `^account\[1\].fallback_account: account "b" has a fallback of its own \("c"\)`},
		{"fallback from incoming", acct("direction = \"incoming\"\nfallback_account = \"b\"\n") + strings.NewReplacer(`name = "a"`, `name = "b"`, "a@", "b@").Replace(acct("")), `^account\[1\].fallback_account: account "a" does not send mail`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.doc)
			if err == nil {
				t.Fatalf("Parse() = nil, want error matching %s", tc.want)
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("Parse() = %q, want match for %s", err, tc.want)
			}
		})
	}
}

func TestCheckFiles(t *testing.T) {
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
	errs := cfg.CheckFiles()
	if len(errs) != 1 || !strings.HasPrefix(errs[0].Error(), "account[1].password_file: cannot read /nonexistent/pw") {
		t.Errorf("CheckFiles() = %v", errs)
	}
}

// config.example.toml parses, and documents every key relayd knows.
func TestExampleDocumentsEveryKey(t *testing.T) {
	b, err := os.ReadFile("../config.example.toml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Parse(string(b)); err != nil {
		t.Fatalf("Parse(config.example.toml) = %v", err)
	}
	for _, key := range knownKeys() {
		re := regexp.MustCompile(`(?m)^#? ?` + regexp.QuoteMeta(key) + ` =`)
		if !re.MatchString(string(b)) {
			t.Errorf("config.example.toml does not document %q", key)
		}
	}
}

func TestSuggest(t *testing.T) {
	for in, want := range map[string]string{"gmial": "gmail", "Office365": "office365", "passwrd": "password", "zzz": ""} {
		if got := suggest(in, Providers); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

// A Graph account needs no SMTP server, and its Graph token asks for
// Mail.Send at graph_url (delegated) or .default (app-only).
func TestGraphDefaults(t *testing.T) {
	base := "[[account]]\nname = \"a\"\nprovider = \"office365\"\ntenant = \"contoso.com\"\nemail = \"a@contoso.com\"\nclient_id = \"c\"\nlocal_password_hash = \"" + hash + "\"\ntransport = \"graph\"\nsmtp_server = \"\"\n"
	cfg, err := Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	a := cfg.Accounts[0]
	if !a.Graph() || a.GraphURL != "https://graph.microsoft.com" ||
		!reflect.DeepEqual(a.GraphScopes, []string{"https://graph.microsoft.com/Mail.Send", "offline_access"}) {
		t.Errorf("graph account = %q %q %q", a.Transport, a.GraphURL, a.GraphScopes)
	}
	cfg, err = Parse(base + "grant = \"client_credentials\"\nclient_secret_file = \"/etc/relayd/s\"\ngraph_url = \"https://graph.microsoft.us/\"\n")
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Accounts[0]; a.GraphURL != "https://graph.microsoft.us" || !reflect.DeepEqual(a.GraphScopes, []string{"https://graph.microsoft.us/.default"}) {
		t.Errorf("app-only graph account = %q %q", a.GraphURL, a.GraphScopes)
	}
}

// [pop3] is off by default; while it listens, an incoming account whose
// provider has no POP3 preset must name its pop3_server, and an idle
// timeout shorter than RFC 1939's 10 minutes is refused.
func TestPOP3Config(t *testing.T) {
	hash := "$2a$10$abcdefghijklmnopqrstuuJ5yH0pQ8f1Hb2oQFv6v9y3a9d3L8r2W"
	acct := func(extra string) string {
		return `[[account]]
name = "scanner"
provider = "password"
email = "scanner@example.org"
password_file = "/etc/relayd/scanner.password"
imap_server = "mail.example.org:993"
smtp_server = "mail.example.org:587"
local_password_hash = "` + hash + `"
` + extra
	}
	cfg, err := Parse(acct(""))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.POP3.Listen) != 0 || cfg.POP3.IdleTimeout != 10*time.Minute {
		t.Errorf("[pop3] defaults = %+v, want no listener and a 10m idle timeout", cfg.POP3)
	}
	_, err = Parse("[pop3]\nlisten = [\"127.0.0.1:1110\"]\n" + acct(""))
	if err == nil || !strings.Contains(err.Error(), "account[1].pop3_server: required") {
		t.Errorf("Parse() without pop3_server = %v, want account[1].pop3_server required", err)
	}
	if _, err = Parse("[pop3]\nlisten = [\"127.0.0.1:1110\"]\n" + acct(`pop3_server = "mail.example.org:995"`)); err != nil {
		t.Errorf("Parse() with pop3_server = %v", err)
	}
	_, err = Parse("[pop3]\nidle_timeout = \"5m\"\n" + acct(""))
	if err == nil || !strings.Contains(err.Error(), "pop3.idle_timeout") {
		t.Errorf("Parse() with a 5m POP3 idle timeout = %v, want it refused", err)
	}
	_, err = Parse(acct(`pop3_server = "mail.example.org:110"
pop3_security = "none"`))
	if err == nil || !strings.Contains(err.Error(), "pop3_security") {
		t.Errorf("Parse() with plaintext POP3 to a remote server = %v, want it refused", err)
	}
}

// A table with a certificate may listen beyond loopback, in plaintext
// (STARTTLS) and with implicit TLS; allow_from takes networks and single
// addresses.
func TestListenerTLS(t *testing.T) {
	cfg, err := Parse(`
[imap]
listen = ["0.0.0.0:143"]
listen_tls = ["[::]:993"]
tls_cert = "/etc/relayd/tls/fullchain.pem"
tls_key = "/etc/relayd/tls/privkey.pem"
allow_from = ["192.168.10.0/24", "10.1.2.3", "::ffff:172.16.0.0/108"]
[smtp]
listen = ["127.0.0.1:1587"]
`)
	if err != nil {
		t.Fatalf("Parse() = %v, want nil", err)
	}
	l := cfg.IMAP.ListenerTLS
	if !l.HasCert() || l.KeyFile != "/etc/relayd/tls/privkey.pem" || len(l.ListenTLS) != 1 {
		t.Errorf("imap = %+v", l)
	}
	for addr, want := range map[string]bool{"192.168.10.7": true, "10.1.2.3": true, "10.1.2.4": false, "172.16.9.9": true, "::ffff:192.168.10.1": true, "8.8.8.8": false} {
		if got := l.Allowed(netip.MustParseAddr(addr)); got != want {
			t.Errorf("Allowed(%s) = %v, want %v", addr, got, want)
		}
	}
	if cfg.SMTP.HasCert() || !cfg.SMTP.Allowed(netip.MustParseAddr("8.8.8.8")) {
		t.Errorf("smtp = %+v: want no certificate and any client", cfg.SMTP.ListenerTLS)
	}
}
