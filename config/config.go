// Package config turns relayd's TOML configuration file into a typed,
// validated Config.
//
// Decoding is strict: an unknown key is an error that names the key, and every
// validation error names the key it concerns, for example
//
//	account[2].provider: unknown provider "office356" (did you mean "office365"?)
//
// Defaults live in Defaults and, for each provider, in package provider; the
// example file config.example.toml at the repository root documents every key
// and is parsed by the tests.
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/relayd/relayd/provider"
)

// Config is relayd's whole configuration.
type Config struct {
	// StateDir holds the token store. Default /var/lib/relayd.
	StateDir string
	// KeyFile holds the key grant files are encrypted under (32 random
	// bytes, base64, one line; root:relayd 0640). A systemd credential
	// relayd.key is preferred when the service has one. Default
	// /etc/relayd/relayd.key; when that does not exist (and KeyFileSet is
	// false) grants are kept in plain files and relayd warns.
	KeyFile string
	// KeyFileSet is true when the file set key_file: a missing key is
	// then every encrypted grant's grant_undecryptable, never plain
	// files.
	KeyFileSet bool
	// StatusSocket is the path of the Unix status socket. Default
	// /run/relayd/status.sock.
	StatusSocket string
	// LogLevel is the minimum level logged. Default info.
	LogLevel slog.Level
	// LogFormat is "text" (default) or "json".
	LogFormat string
	// AdminGroup's members may change things through the status socket
	// (queue operations, grants, reload) besides root and relayd's own
	// user; members of the socket's group may only read. Empty: none.
	AdminGroup string
	// ShutdownGrace is how long a shutdown lets sessions and deliveries in
	// progress finish. Default 10s; keep it shorter than the unit's
	// TimeoutStopSec.
	ShutdownGrace time.Duration
	IMAP          IMAP
	POP3          POP3
	SMTP          SMTP
	Queue         Queue
	Health        Health
	Metrics       Metrics
	Web           Web
	Login         Login
	Sendmail      Sendmail
	Accounts      []*Account
}

// Sendmail configures relayd sendmail, the command scripts and cron jobs
// submit mail with.
type Sendmail struct {
	// DefaultAccount sends a message that names no sender (no -f, and no
	// From: with -t); empty: such a message is refused.
	DefaultAccount string
	// Allow maps local users ("www-data") and groups ("@helpdesk") to
	// the accounts they may send as. Root and relayd's own user (the
	// owner of state_dir) may send as any account.
	Allow map[string][]string
	// Socket is the Unix socket, mode 0666, on which the daemon takes
	// messages from relayd sendmail (and nothing else), checking each
	// caller's credentials against Allow. Default: sendmail.sock beside
	// StatusSocket (/run/relayd/sendmail.sock).
	Socket string
}

// SendmailSocket is the path of the sendmail socket: Sendmail.Socket, or
// sendmail.sock beside the status socket.
func (c *Config) SendmailSocket() string {
	if c.Sendmail.Socket != "" {
		return c.Sendmail.Socket
	}
	return filepath.Join(filepath.Dir(c.StatusSocket), "sendmail.sock")
}

// SendmailSocketOf reads, from the configuration file at path, only where
// the sendmail socket is (status_socket and [sendmail] socket), ignoring
// everything else: relayd sendmail still finds a running daemon when an
// edit broke the file that the daemon's reload refused. ok is false when
// the file could not be read as TOML at all.
func SendmailSocketOf(path string) (socket string, ok bool) {
	var raw struct {
		StatusSocket *string `toml:"status_socket"`
		Sendmail     struct {
			Socket *string `toml:"socket"`
		} `toml:"sendmail"`
	}
	if _, err := toml.DecodeFile(path, &raw); err != nil {
		return "", false
	}
	c := Defaults()
	if raw.StatusSocket != nil && *raw.StatusSocket != "" {
		c.StatusSocket = *raw.StatusSocket
	}
	if raw.Sendmail.Socket != nil {
		c.Sendmail.Socket = *raw.Sendmail.Socket
	}
	return c.SendmailSocket(), true
}

// Login configures the defence against guessed local passwords.
type Login struct {
	// MaxFailures failed logins of one local user within FailureWindow
	// lock that user out for Lockout: logins are refused without a
	// password check. Defaults 10, 10m, 10m.
	MaxFailures            int
	FailureWindow, Lockout time.Duration
}

// Metrics configures the Prometheus endpoint besides the status socket's.
type Metrics struct {
	// Listen is a host:port serving GET /metrics; empty: none. Loopback
	// only unless AllowRemote.
	Listen      string
	AllowRemote bool
}

// Web configures the web console, where an admin sees the accounts'
// conditions and reauthorizes them in a browser.
type Web struct {
	// Listen is the host:port the console serves HTTP on; empty (the
	// default): no console. Loopback only unless CertFile is set.
	Listen string
	// CertFile and KeyFile are PEM files (the certificate chain, leaf
	// first, and its private key), absolute paths. Both or neither. With
	// them the console serves HTTPS, and Listen may be beyond loopback.
	CertFile, KeyFile string
	// RedirectURI is where the identity provider sends the browser back
	// after Reauthorize, exactly as registered with the app, e.g.
	// "http://localhost:8025/oauth/callback": an absolute URL whose path
	// is WebCallbackPath, http only for a loopback host. Empty (the
	// default): no redirect; the console offers the device code
	// (Microsoft) or pasting the address the browser ends at (Google).
	// Needs Listen.
	RedirectURI string
	// SessionIdle ends a console session with no request for this long.
	// Default 30m; from MinWebSessionIdle to MaxWebSessionIdle.
	SessionIdle time.Duration
}

// Enabled reports whether the console is on: Listen is set.
func (w Web) Enabled() bool { return w.Listen != "" }

// TLS reports whether the console serves HTTPS.
func (w Web) TLS() bool { return w.CertFile != "" && w.KeyFile != "" }

// WebCallbackPath is the path of the console's redirect URI: the
// identity provider sends the browser back there after a sign-in.
const WebCallbackPath = "/oauth/callback"

// Bounds of Web.SessionIdle.
const (
	MinWebSessionIdle = time.Minute
	MaxWebSessionIdle = 12 * time.Hour // a session ends 12 hours after it started anyway
)

// Health configures how accounts' conditions are decided and told.
type Health struct {
	// RetryBudget probes over RetryWindow: transient token-endpoint
	// failures keep an account degraded until that many scheduled probes
	// (spaced RetryWindow/RetryBudget apart) failed; then it is
	// disconnected, and probing goes on. Defaults 8 over 12 minutes.
	RetryBudget int
	RetryWindow time.Duration
	// WarnDays: a grant predicted to end within this many days raises the
	// account to warning. Default 10.
	WarnDays int
	// OnStateChange is a command (argv, run without a shell) run once per
	// account state transition; empty: none.
	OnStateChange []string
	// HookTimeout kills OnStateChange after this long. Default 30s.
	HookTimeout time.Duration
}

// IMAP configures the downstream IMAP listeners.
type IMAP struct {
	// Listen are host:port addresses served in plaintext, offering
	// STARTTLS with a certificate; beyond loopback only with one. Default
	// 127.0.0.1:1143.
	Listen []string
	ListenerTLS
	// PreauthTimeout bounds how long a downstream client may take to log in.
	// Default 60s.
	PreauthTimeout time.Duration
	// IdleTimeout closes a session whose downstream client sent nothing for
	// this long (RFC 3501 §5.4 autologout timer: at least 30 minutes).
	// Default 31m.
	IdleTimeout time.Duration
	// WriteTimeout closes a session whose client (or upstream) takes
	// nothing written to it for this long. Default 5m.
	WriteTimeout time.Duration
	// MaxSessions and MaxSessionsPerAddress bound the open sessions, in
	// all and from one client address; 0: no limit. Defaults 1000 and 0.
	MaxSessions, MaxSessionsPerAddress int
	// WarmConnections is the default of the accounts' warm_connections:
	// upstream connections kept dialed, TLS-handshaked and greeted for
	// the next login. Default 1; 0: none.
	WarmConnections int
}

// MaxWarmConnections is the most warm upstream connections an account
// may keep per protocol.
const MaxWarmConnections = 10

// POP3 configures the downstream POP3 listeners.
type POP3 struct {
	// Listen: as for IMAP, offering STLS with a certificate. Default
	// none: POP3 is off (unless ListenTLS is set).
	Listen []string
	ListenerTLS
	// PreauthTimeout bounds how long a downstream client may take to log
	// in. Default 60s.
	PreauthTimeout time.Duration
	// IdleTimeout closes a session whose downstream client sent nothing
	// for this long (RFC 1939 §3: an autologout timer of at least 10
	// minutes). Default 10m; shorter is refused.
	IdleTimeout time.Duration
	// WriteTimeout closes a session whose client (or upstream) takes
	// nothing written to it for this long. Default 5m.
	WriteTimeout time.Duration
	// MaxSessions and MaxSessionsPerAddress: as for IMAP. Defaults 200
	// and 0.
	MaxSessions, MaxSessionsPerAddress int
}

// Listening reports whether any POP3 listener is configured.
func (p POP3) Listening() bool { return len(p.Listen)+len(p.ListenTLS) > 0 }

// MinPOP3IdleTimeout is RFC 1939 §3's shortest autologout timer.
const MinPOP3IdleTimeout = 10 * time.Minute

// SMTP configures the downstream SMTP listeners.
type SMTP struct {
	// Listen: as for IMAP. Default 127.0.0.1:1587.
	Listen []string
	ListenerTLS
	// MaxMessageSize is the largest message accepted, in bytes. Default
	// 35 MiB (Exchange Online's limit).
	MaxMessageSize int64
	// Timeout bounds waiting for a client's next command or data, and
	// for a client to take a reply (RFC 5321 §4.5.3.2.7: at least 5
	// minutes). Default 5m.
	Timeout time.Duration
	// MaxSessions and MaxSessionsPerAddress: as for IMAP. Defaults 200
	// and 0.
	MaxSessions, MaxSessionsPerAddress int
}

// Queue configures the outbound queue.
type Queue struct {
	// RetryMin is the first retry delay; it doubles per attempt up to
	// RetryMax. Defaults 1m and 30m.
	RetryMin, RetryMax time.Duration
	// Lifetime is how long a message may wait (not counting time its
	// account was held) before it bounces. Default 120h (5 days).
	Lifetime time.Duration
}

// Security is how relayd protects a connection to an upstream server.
type Security = provider.Security

// Connection security modes.
const (
	SecurityTLS      = provider.SecurityTLS
	SecuritySTARTTLS = provider.SecuritySTARTTLS
	SecurityNone     = provider.SecurityNone
)

// Direction says which way mail flows for an account.
type Direction string

// Account directions.
const (
	DirIncoming Direction = "incoming"
	DirOutgoing Direction = "outgoing"
	DirBoth     Direction = "both"
)

// Incoming reports whether the account serves IMAP and POP3 logins.
func (d Direction) Incoming() bool { return d == DirIncoming || d == DirBoth }

// Outgoing reports whether the account may send mail.
func (d Direction) Outgoing() bool { return d == DirOutgoing || d == DirBoth }

// Grant types an account can use.
const (
	GrantRefreshToken      = provider.GrantRefreshToken
	GrantClientCredentials = provider.GrantClientCredentials
	GrantServiceAccount    = provider.GrantServiceAccount
)

// Account is one upstream mailbox and the local credentials that reach it.
type Account struct {
	Name     string
	Provider string
	// Email is the mailbox: XOAUTH2 user=. Required.
	Email string
	// Login is who signs in. Defaults to Email.
	Login string
	// Tenant is the Microsoft tenant (office365). Default "organizations".
	Tenant string
	// tenantDefault: the file set no tenant; Tenant is the provider's.
	tenantDefault    bool
	ClientID         string
	ClientSecretFile string
	// ClientCertificateFile (PEM certificate, and its key unless
	// ClientKeyFile holds it) signs client assertions for the
	// client_credentials grant instead of a secret (Microsoft).
	ClientCertificateFile, ClientKeyFile string
	// ServiceAccountFile is a Google service account key (JSON) for the
	// service_account grant: domain-wide delegation to Email.
	ServiceAccountFile string
	// Grant is refresh_token (default) or client_credentials.
	Grant     string
	Direction Direction
	// LocalUser is the user name the legacy client sends. Defaults to Email.
	LocalUser         string
	LocalPasswordHash string

	// Endpoints and servers; filled from the provider preset unless given.
	TokenURL      string
	AuthURL       string
	DeviceAuthURL string
	// Issuer is the OpenID Connect issuer that signs ID tokens, to check
	// who signed in (provider preset, or the issuer key for custom).
	Issuer string
	// Flow is the default interactive sign-in: "device" or "browser".
	Flow string
	// DeviceFlow: the provider allows the device flow.
	DeviceFlow bool
	// AuthParams are added to authorization requests (prompt, ...).
	AuthParams map[string]string
	// RedirectHost and RedirectPort make the loopback redirect URI of the
	// browser flow: http://RedirectHost:RedirectPort. Port 0: a random
	// free one at each sign-in.
	RedirectHost string
	RedirectPort int
	Scopes       []string
	IMAPServer   string
	SMTPServer   string
	IMAPSecurity Security
	SMTPSecurity Security
	// POP3Server and POP3Security are the upstream POP3 server relayd's
	// POP3 listener logs in at (provider preset: outlook.office365.com:995,
	// pop.gmail.com:995, implicit TLS). Required only for an incoming
	// account of a provider without one while [pop3] listens.
	POP3Server   string
	POP3Security Security
	// CAFile is a PEM bundle of private CAs trusted for the upstream servers.
	CAFile string
	// PasswordFile holds the upstream password (provider "password").
	PasswordFile string
	// SendAs are the addresses besides Email the account may send as
	// (MAIL FROM).
	SendAs []string
	// SMTPConnections caps concurrent upstream SMTP connections. Default
	// from the provider: 3 for Microsoft (Exchange Online's limit), 5 for
	// Gmail, 2 otherwise.
	SMTPConnections int
	// IMAPConnections caps the account's open IMAP sessions (each holds
	// one upstream connection); more logins get NO [LIMIT]. Default from
	// the provider: 15 for Gmail (documented), 20 for Microsoft
	// (reported), else no limit (0).
	IMAPConnections int
	// WarmConnections is how many upstream IMAP (and, once the account
	// logged in over POP3, POP3) connections relayd keeps dialed,
	// TLS-handshaked and greeted, not yet authenticated, for the
	// account's next logins. Default [imap] warm_connections; 0: none.
	WarmConnections int
	// UpstreamPreauthTimeout is how long the provider's servers keep a
	// connection that has not logged in (Exchange: 60 s); 0: unknown.
	// From the provider; warm connections are replaced before it ends.
	UpstreamPreauthTimeout time.Duration
	// SMTPRate caps messages per minute. Default from the provider: 30
	// for Microsoft, else unlimited (0).
	SMTPRate int
	// IdleLifetime and TestingLifetime come from the provider: how long a
	// grant lives unused, and how long one of an app in testing lives.
	IdleLifetime, TestingLifetime time.Duration
	// TestingApp: a Google app in "Testing" publishing status, whose grants
	// end 7 days after consent.
	TestingApp bool
	// MaxGrantAge is how long a grant lives at most (a known policy), for
	// the forecast; 0: unknown.
	MaxGrantAge time.Duration
	// TokenAuthInParams sends the client credentials in the token
	// request's body (the provider wants it so), not with HTTP Basic.
	TokenAuthInParams bool

	// Transport is how the account's outgoing mail leaves: TransportSMTP
	// (default) or TransportGraph (Microsoft Graph sendMail).
	Transport string
	// GraphURL is Microsoft Graph's base URL (a national cloud's, or a
	// test's). Default https://graph.microsoft.com.
	GraphURL string
	// GraphScopes are requested for the Graph resource's access token,
	// from the account's one refresh token. Default GraphURL+"/Mail.Send"
	// and offline_access, or GraphURL+"/.default" for app-only grants.
	GraphScopes []string
	// FallbackAccount names the account whose mailbox sends this
	// account's mail while this one needs a person (needs_reauth,
	// needs_admin) for longer than FallbackAfter (default 15m);
	// FallbackFrom says whose From the copy sent carries: FallbackRewrite
	// (default) or FallbackKeep.
	FallbackAccount string
	FallbackAfter   time.Duration
	FallbackFrom    string
}

// Transports and fallback modes.
const (
	TransportSMTP  = "smtp"
	TransportGraph = "graph"

	FallbackRewrite = "rewrite"
	FallbackKeep    = "keep"

	// DefaultGraphURL is Microsoft Graph's global service.
	DefaultGraphURL = "https://graph.microsoft.com"
	// GraphMaxMessage is the largest stored message Graph sendMail
	// takes: requests are capped at 4 MB, and base64 grows a message by
	// a third (RFC 4648 §4), less room for the recipients the copy sent
	// may gain in its header.
	GraphMaxMessage = 4_000_000/4*3 - 64<<10
)

// Graph reports whether the account sends through Microsoft Graph.
func (a *Account) Graph() bool { return a.Transport == TransportGraph }

// OAuth reports whether the account logs in upstream with OAuth 2.0.
func (a *Account) OAuth() bool { return a.Provider != "password" }

// AppOnly reports whether the account's grant needs no person: tokens are
// fetched on demand with the app's own credentials.
func (a *Account) AppOnly() bool {
	return a.Grant == GrantClientCredentials || a.Grant == GrantServiceAccount
}

// Defaults returns the configuration used for keys a file leaves out.
func Defaults() *Config {
	return &Config{
		StateDir:      "/var/lib/relayd",
		KeyFile:       "/etc/relayd/relayd.key",
		StatusSocket:  "/run/relayd/status.sock",
		LogLevel:      slog.LevelInfo,
		LogFormat:     "text",
		ShutdownGrace: 10 * time.Second,
		IMAP: IMAP{
			Listen:         []string{"127.0.0.1:1143"},
			PreauthTimeout: 60 * time.Second,
			IdleTimeout:    31 * time.Minute,
			WriteTimeout:   5 * time.Minute,
			MaxSessions:    1000,
			// One warm connection per account: a login pays only the
			// AUTHENTICATE round trip.
			WarmConnections: 1,
		},
		POP3: POP3{
			PreauthTimeout: 60 * time.Second,
			IdleTimeout:    MinPOP3IdleTimeout,
			WriteTimeout:   5 * time.Minute,
			MaxSessions:    200,
		},
		SMTP: SMTP{Listen: []string{"127.0.0.1:1587"}, MaxMessageSize: 35 << 20,
			Timeout: 5 * time.Minute, MaxSessions: 200},
		Queue:  Queue{RetryMin: time.Minute, RetryMax: 30 * time.Minute, Lifetime: 120 * time.Hour},
		Health: Health{RetryBudget: 8, RetryWindow: 12 * time.Minute, WarnDays: 10, HookTimeout: 30 * time.Second},
		Login:  Login{MaxFailures: 10, FailureWindow: 10 * time.Minute, Lockout: 10 * time.Minute},
		Web:    Web{SessionIdle: 30 * time.Minute},
	}
}

// Providers are the known provider names.
var Providers = provider.Names

// Error is a configuration error about one key.
type Error struct {
	Key string // e.g. "account[2].provider"; empty for file-level errors
	Msg string
	Err error // the underlying error, if any (a file that cannot be read)
}

func (e *Error) Unwrap() error { return e.Err }

func (e *Error) Error() string {
	if e.Key == "" {
		return e.Msg
	}
	return e.Key + ": " + e.Msg
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading configuration: %w", err)
	}
	cfg, err := Parse(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes and validates a configuration document. All problems found
// are returned together, joined, each naming its key.
func Parse(doc string) (*Config, error) {
	var raw rawConfig
	md, err := toml.Decode(doc, &raw)
	if err != nil {
		if e := typeError(err, doc); e != nil {
			return nil, e
		}
		return nil, tomlError(err)
	}
	var errs []error
	for _, k := range md.Undecoded() {
		errs = append(errs, &Error{Key: keyName(k, doc), Msg: "unknown key"})
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	cfg, errs := raw.convert()
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return cfg, nil
}

var typeErrRe = regexp.MustCompile(`^toml: line (\d+) \(last key "([^"]+)"\): incompatible types: TOML value has type (\w+); destination has type (\w+)`)

// typeError reports a value of the wrong type with its key, as every other
// error is (account[2].send_as: ...), or returns nil.
func typeError(err error, doc string) error {
	m := typeErrRe.FindStringSubmatch(err.Error())
	if m == nil {
		return nil
	}
	line, _ := strconv.Atoi(m[1])
	key := m[2]
	if rest, ok := strings.CutPrefix(key, "account."); ok {
		n := 0
		for i, l := range strings.Split(doc, "\n") {
			if i >= line {
				break
			}
			if strings.TrimSpace(l) == "[[account]]" {
				n++
			}
		}
		key = fmt.Sprintf("account[%d].%s", n, rest)
	}
	return &Error{Key: key, Msg: fmt.Sprintf("line %d: %s where %s is expected", line, typeWord(m[3]), typeWord(m[4]))}
}

func typeWord(t string) string {
	switch t {
	case "slice", "array":
		return "an array (e.g. [\"a\", \"b\"])"
	case "string":
		return "a string (in quotes)"
	case "int", "int64", "integer", "float", "float64":
		return "a number"
	case "bool":
		return "true or false"
	case "map", "struct", "table":
		return "a table"
	}
	return "a " + t
}

func tomlError(err error) error {
	var perr toml.ParseError
	if errors.As(err, &perr) {
		return &Error{Msg: fmt.Sprintf("line %d: %s", perr.Position.Line, perr.Message)}
	}
	return &Error{Msg: err.Error()}
}

// keyName renders an unknown key as the user wrote it. For a key inside an
// [[account]] table it names the account's position, account[2].foo, which
// the TOML decoder does not report.
func keyName(k toml.Key, doc string) string {
	if len(k) == 2 && k[0] == "account" {
		var generic struct {
			Account []map[string]any `toml:"account"`
		}
		if _, err := toml.Decode(doc, &generic); err == nil {
			var idx []string
			for i, m := range generic.Account {
				if _, ok := m[k[1]]; ok {
					idx = append(idx, fmt.Sprint(i+1))
				}
			}
			if len(idx) > 0 {
				return "account[" + strings.Join(idx, ",") + "]." + k[1]
			}
		}
	}
	return k.String()
}

// CheckLoopback returns an error unless addr is host:port with a loopback IP
// host (or "localhost"). Plaintext upstreams are restricted to loopback, and
// so are listeners without a certificate.
func CheckLoopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address", host)
	}
	return nil
}

// Account returns the account named name, or nil.
func (c *Config) Account(name string) *Account {
	for _, a := range c.Accounts {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// AccountNames lists the configured account names, for error messages.
func (c *Config) AccountNames() []string {
	names := make([]string, len(c.Accounts))
	for i, a := range c.Accounts {
		names[i] = a.Name
	}
	return names
}
