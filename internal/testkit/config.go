package testkit

import (
	"fmt"
	"strings"

	"github.com/relayd/relayd/config"
)

// Config builds a relayd configuration file for tests and the demo, so that
// none of them writes TOML by hand. Zero fields are left out (relayd's
// defaults apply), except that listeners left empty are turned off.
type Config struct {
	StateDir, StatusSocket string
	// KeyFile is key_file: the token store's key.
	KeyFile                string
	LogLevel               string
	IMAPListen, SMTPListen []string
	// POP3Listen turns on [pop3]; POP3 are more lines of its table.
	POP3Listen         []string
	POP3               []string
	RetryMin, RetryMax string // durations, e.g. "50ms"
	// Health is the [health] table's lines, verbatim (e.g.
	// `retry_budget = 4`).
	Health []string
	// IMAP and SMTP are more lines of the [imap] and [smtp] tables,
	// verbatim (e.g. `max_sessions = 1`).
	IMAP, SMTP []string
	// Login, Metrics and Web are the [login], [metrics] and [web]
	// tables' lines, verbatim.
	Login, Metrics, Web []string
	// Sendmail is the [sendmail] table's lines, verbatim (e.g.
	// `default_account = "support"`).
	Sendmail []string
	Accounts []Account
}

// Account is one [[account]] table.
type Account struct {
	Name, Provider, Email, Login string
	ClientID, ClientSecretFile   string
	Grant                        string
	ClientCertificateFile        string
	ClientKeyFile                string
	ServiceAccountFile           string
	TokenURL, AuthURL            string
	DeviceAuthURL, Issuer        string
	RedirectPort                 int
	IMAPServer, SMTPServer       string
	// POP3Server is pop3_server, with Security as its pop3_security.
	POP3Server string
	// Security is both imap_security and smtp_security: "none" for the
	// plaintext fakes, "tls" with CAFile for the TLS ones.
	Security          string
	CAFile            string
	PasswordFile      string
	Direction         string
	LocalUser         string
	LocalPasswordHash string
	SendAs            []string
	SMTPConnections   int
	SMTPRate          int
	// WarmConnections, when set, is warm_connections.
	WarmConnections *int
	// Transport is "smtp" or "graph"; GraphURL a fake Graph's URL.
	Transport, GraphURL string
	GraphScopes         []string
	// FallbackAccount, FallbackAfter ("15m") and FallbackFrom are the
	// fallback mailbox keys.
	FallbackAccount, FallbackAfter, FallbackFrom string
}

// TOML renders the configuration.
func (c Config) TOML() string {
	var b strings.Builder
	kv(&b, "state_dir", c.StateDir)
	kv(&b, "status_socket", c.StatusSocket)
	kv(&b, "key_file", c.KeyFile)
	if c.LogLevel != "" {
		b.WriteString("[log]\n")
		kv(&b, "level", c.LogLevel)
	}
	fmt.Fprintf(&b, "[imap]\nlisten = %s\n", list(c.IMAPListen))
	lines(&b, c.IMAP)
	if len(c.POP3Listen) > 0 || len(c.POP3) > 0 {
		fmt.Fprintf(&b, "[pop3]\nlisten = %s\n", list(c.POP3Listen))
		lines(&b, c.POP3)
	}
	fmt.Fprintf(&b, "[smtp]\nlisten = %s\n", list(c.SMTPListen))
	lines(&b, c.SMTP)
	if c.RetryMin != "" || c.RetryMax != "" {
		b.WriteString("[queue]\n")
		kv(&b, "retry_min", c.RetryMin)
		kv(&b, "retry_max", c.RetryMax)
	}
	if len(c.Login) > 0 {
		b.WriteString("[login]\n")
		lines(&b, c.Login)
	}
	if len(c.Metrics) > 0 {
		b.WriteString("[metrics]\n")
		lines(&b, c.Metrics)
	}
	if len(c.Web) > 0 {
		b.WriteString("[web]\n")
		lines(&b, c.Web)
	}
	if len(c.Health) > 0 {
		b.WriteString("[health]\n" + strings.Join(c.Health, "\n") + "\n")
	}
	if len(c.Sendmail) > 0 {
		b.WriteString("[sendmail]\n")
		lines(&b, c.Sendmail)
	}
	for _, a := range c.Accounts {
		b.WriteString(a.TOML())
	}
	return b.String()
}

// lines writes each of l on a line of its own.
func lines(b *strings.Builder, l []string) {
	for _, s := range l {
		b.WriteString(s + "\n")
	}
}

// TOML renders the [[account]] table.
func (a Account) TOML() string {
	var b strings.Builder
	b.WriteString("[[account]]\n")
	kv(&b, "name", a.Name)
	kv(&b, "provider", a.Provider)
	kv(&b, "email", a.Email)
	kv(&b, "login", a.Login)
	kv(&b, "client_id", a.ClientID)
	kv(&b, "client_secret_file", a.ClientSecretFile)
	kv(&b, "grant", a.Grant)
	kv(&b, "client_certificate_file", a.ClientCertificateFile)
	kv(&b, "client_key_file", a.ClientKeyFile)
	kv(&b, "service_account_file", a.ServiceAccountFile)
	kv(&b, "token_url", a.TokenURL)
	kv(&b, "auth_url", a.AuthURL)
	kv(&b, "device_auth_url", a.DeviceAuthURL)
	kv(&b, "issuer", a.Issuer)
	if a.RedirectPort > 0 {
		fmt.Fprintf(&b, "redirect_port = %d\n", a.RedirectPort)
	}
	kv(&b, "imap_server", a.IMAPServer)
	kv(&b, "smtp_server", a.SMTPServer)
	if a.IMAPServer != "" {
		kv(&b, "imap_security", a.Security)
	}
	if a.SMTPServer != "" {
		kv(&b, "smtp_security", a.Security)
	}
	kv(&b, "pop3_server", a.POP3Server)
	if a.POP3Server != "" {
		kv(&b, "pop3_security", a.Security)
	}
	kv(&b, "ca_file", a.CAFile)
	kv(&b, "password_file", a.PasswordFile)
	kv(&b, "direction", a.Direction)
	kv(&b, "local_user", a.LocalUser)
	kv(&b, "local_password_hash", a.LocalPasswordHash)
	if len(a.SendAs) > 0 {
		fmt.Fprintf(&b, "send_as = %s\n", list(a.SendAs))
	}
	if a.SMTPConnections > 0 {
		fmt.Fprintf(&b, "smtp_connections = %d\n", a.SMTPConnections)
	}
	if a.SMTPRate > 0 {
		fmt.Fprintf(&b, "smtp_rate = %d\n", a.SMTPRate)
	}
	if a.WarmConnections != nil {
		fmt.Fprintf(&b, "warm_connections = %d\n", *a.WarmConnections)
	}
	kv(&b, "transport", a.Transport)
	kv(&b, "graph_url", a.GraphURL)
	if len(a.GraphScopes) > 0 {
		fmt.Fprintf(&b, "graph_scopes = %s\n", list(a.GraphScopes))
	}
	kv(&b, "fallback_account", a.FallbackAccount)
	kv(&b, "fallback_after", a.FallbackAfter)
	kv(&b, "fallback_from", a.FallbackFrom)
	return b.String()
}

// UnusedHash is a well-formed bcrypt hash for accounts whose local login a
// test does not use (no password matches it).
const UnusedHash = "$2a$04$unusedunusedunusedunuOeL0c3Oj0Q6tQm9dG1wNyy4cJ7n3oPFO"

// Parsed returns the account as relayd's configuration makes it (every
// default filled in), failing the test when it does not validate.
func (a Account) Parsed(t TB) *config.Account {
	t.Helper()
	cfg, err := config.Parse(a.TOML())
	if err != nil {
		t.Fatal(err)
	}
	return cfg.Accounts[0]
}

func kv(b *strings.Builder, key, val string) {
	if val != "" {
		fmt.Fprintf(b, "%s = %q\n", key, val)
	}
}

func list(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
