package config

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/internal/statedir"
	"github.com/relayd/relayd/internal/tlscert"
	"github.com/relayd/relayd/provider"
)

// rawConfig mirrors the file's shape; convert turns it into a Config.
type rawConfig struct {
	StateDir      *string     `toml:"state_dir"`
	KeyFile       *string     `toml:"key_file"`
	StatusSocket  *string     `toml:"status_socket"`
	ShutdownGrace *string     `toml:"shutdown_grace"`
	AdminGroup    *string     `toml:"admin_group"`
	Log           rawLog      `toml:"log"`
	IMAP          rawIMAP     `toml:"imap"`
	POP3          rawPOP3     `toml:"pop3"`
	SMTP          rawSMTP     `toml:"smtp"`
	Queue         rawQueue    `toml:"queue"`
	Health        rawHealth   `toml:"health"`
	Metrics       rawMetrics  `toml:"metrics"`
	Web           rawWeb      `toml:"web"`
	Login         rawLogin    `toml:"login"`
	Sendmail      rawSendmail `toml:"sendmail"`
	// OnStateChange may also stand at the top level.
	OnStateChange any          `toml:"on_state_change"`
	Account       []rawAccount `toml:"account"`
}

type rawLog struct {
	Level  *string `toml:"level"`
	Format *string `toml:"format"`
}

type rawIMAP struct {
	Listen []string `toml:"listen"`
	rawListenerTLS
	PreauthTimeout *string `toml:"preauth_timeout"`
	IdleTimeout    *string `toml:"idle_timeout"`
	WriteTimeout   *string `toml:"write_timeout"`
	MaxSessions    *int    `toml:"max_sessions"`
	MaxPerAddress  *int    `toml:"max_sessions_per_address"`
	WarmConns      *int    `toml:"warm_connections"`
}

type rawPOP3 struct {
	Listen []string `toml:"listen"`
	rawListenerTLS
	PreauthTimeout *string `toml:"preauth_timeout"`
	IdleTimeout    *string `toml:"idle_timeout"`
	WriteTimeout   *string `toml:"write_timeout"`
	MaxSessions    *int    `toml:"max_sessions"`
	MaxPerAddress  *int    `toml:"max_sessions_per_address"`
}

type rawSMTP struct {
	Listen []string `toml:"listen"`
	rawListenerTLS
	MaxMessageSize *int64  `toml:"max_message_size"`
	Timeout        *string `toml:"timeout"`
	MaxSessions    *int    `toml:"max_sessions"`
	MaxPerAddress  *int    `toml:"max_sessions_per_address"`
}

type rawQueue struct {
	RetryMin *string `toml:"retry_min"`
	RetryMax *string `toml:"retry_max"`
	Lifetime *string `toml:"lifetime"`
}

type rawMetrics struct {
	Listen      *string `toml:"listen"`
	AllowRemote *bool   `toml:"allow_remote"`
}

type rawWeb struct {
	Listen      *string `toml:"listen"`
	TLSCert     *string `toml:"tls_cert"`
	TLSKey      *string `toml:"tls_key"`
	RedirectURI *string `toml:"redirect_uri"`
	SessionIdle *string `toml:"session_idle"`
}

type rawLogin struct {
	MaxFailures   *int    `toml:"max_failures"`
	FailureWindow *string `toml:"failure_window"`
	Lockout       *string `toml:"lockout"`
}

type rawSendmail struct {
	DefaultAccount *string             `toml:"default_account"`
	Allow          map[string][]string `toml:"allow"`
	Socket         *string             `toml:"socket"`
}

type rawHealth struct {
	RetryBudget   *int    `toml:"retry_budget"`
	RetryWindow   *string `toml:"retry_window"`
	WarnDays      *int    `toml:"warn_days"`
	OnStateChange any     `toml:"on_state_change"`
	HookTimeout   *string `toml:"hook_timeout"`
}

type rawAccount struct {
	Name              string   `toml:"name"`
	Provider          string   `toml:"provider"`
	Email             string   `toml:"email"`
	Login             string   `toml:"login"`
	Tenant            string   `toml:"tenant"`
	ClientID          string   `toml:"client_id"`
	ClientSecretFile  string   `toml:"client_secret_file"`
	ClientCertFile    string   `toml:"client_certificate_file"`
	ClientKeyFile     string   `toml:"client_key_file"`
	ServiceAcctFile   string   `toml:"service_account_file"`
	Grant             string   `toml:"grant"`
	Direction         string   `toml:"direction"`
	LocalUser         string   `toml:"local_user"`
	LocalPasswordHash string   `toml:"local_password_hash"`
	TokenURL          string   `toml:"token_url"`
	AuthURL           string   `toml:"auth_url"`
	DeviceAuthURL     string   `toml:"device_auth_url"`
	Issuer            string   `toml:"issuer"`
	RedirectPort      int      `toml:"redirect_port"`
	Scopes            []string `toml:"scopes"`
	IMAPServer        string   `toml:"imap_server"`
	SMTPServer        string   `toml:"smtp_server"`
	IMAPSecurity      string   `toml:"imap_security"`
	SMTPSecurity      string   `toml:"smtp_security"`
	POP3Server        string   `toml:"pop3_server"`
	POP3Security      string   `toml:"pop3_security"`
	CAFile            string   `toml:"ca_file"`
	PasswordFile      string   `toml:"password_file"`
	SendAs            []string `toml:"send_as"`
	SMTPConnections   int      `toml:"smtp_connections"`
	IMAPConnections   int      `toml:"imap_connections"`
	WarmConnections   *int     `toml:"warm_connections"`
	SMTPRate          int      `toml:"smtp_rate"`
	TestingApp        bool     `toml:"testing_app"`
	MaxGrantAge       string   `toml:"max_grant_age"`
	Transport         string   `toml:"transport"`
	GraphURL          string   `toml:"graph_url"`
	GraphScopes       []string `toml:"graph_scopes"`
	FallbackAccount   string   `toml:"fallback_account"`
	FallbackAfter     string   `toml:"fallback_after"`
	FallbackFrom      string   `toml:"fallback_from"`
}

func (r *rawConfig) convert() (*Config, []error) {
	cfg := Defaults()
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}
	if r.StateDir != nil {
		if *r.StateDir == "" {
			bad("state_dir", "must not be empty")
		}
		cfg.StateDir = *r.StateDir
	}
	if r.KeyFile != nil {
		if !filepath.IsAbs(*r.KeyFile) {
			bad("key_file", "must be an absolute path, not %q", *r.KeyFile)
		}
		cfg.KeyFile, cfg.KeyFileSet = *r.KeyFile, true
	}
	if r.StatusSocket != nil {
		if *r.StatusSocket == "" {
			bad("status_socket", "must not be empty")
		}
		cfg.StatusSocket = *r.StatusSocket
	}
	if r.Log.Format != nil {
		switch *r.Log.Format {
		case "text", "json":
			cfg.LogFormat = *r.Log.Format
		default:
			bad("log.format", "unknown format %q (use text or json)", *r.Log.Format)
		}
	}
	if r.Log.Level != nil {
		if err := cfg.LogLevel.UnmarshalText([]byte(*r.Log.Level)); err != nil {
			bad("log.level", "unknown level %q (use debug, info, warn or error)", *r.Log.Level)
		}
	}
	if r.IMAP.Listen != nil {
		cfg.IMAP.Listen = r.IMAP.Listen
	}
	if r.SMTP.Listen != nil {
		cfg.SMTP.Listen = r.SMTP.Listen
	}
	cfg.IMAP.ListenerTLS = r.IMAP.convert("imap", cfg.IMAP.Listen, bad)
	cfg.SMTP.ListenerTLS = r.SMTP.convert("smtp", cfg.SMTP.Listen, bad)
	r.convertPOP3(cfg, bad)
	duration(&cfg.ShutdownGrace, r.ShutdownGrace, "shutdown_grace", bad)
	if r.AdminGroup != nil {
		cfg.AdminGroup = *r.AdminGroup
	}
	duration(&cfg.IMAP.PreauthTimeout, r.IMAP.PreauthTimeout, "imap.preauth_timeout", bad)
	duration(&cfg.IMAP.IdleTimeout, r.IMAP.IdleTimeout, "imap.idle_timeout", bad)
	duration(&cfg.IMAP.WriteTimeout, r.IMAP.WriteTimeout, "imap.write_timeout", bad)
	duration(&cfg.SMTP.Timeout, r.SMTP.Timeout, "smtp.timeout", bad)
	limit(&cfg.IMAP.MaxSessions, r.IMAP.MaxSessions, "imap.max_sessions", bad)
	limit(&cfg.IMAP.MaxSessionsPerAddress, r.IMAP.MaxPerAddress, "imap.max_sessions_per_address", bad)
	warm(&cfg.IMAP.WarmConnections, r.IMAP.WarmConns, "imap.warm_connections", bad)
	limit(&cfg.SMTP.MaxSessions, r.SMTP.MaxSessions, "smtp.max_sessions", bad)
	limit(&cfg.SMTP.MaxSessionsPerAddress, r.SMTP.MaxPerAddress, "smtp.max_sessions_per_address", bad)
	duration(&cfg.Queue.RetryMin, r.Queue.RetryMin, "queue.retry_min", bad)
	duration(&cfg.Queue.RetryMax, r.Queue.RetryMax, "queue.retry_max", bad)
	duration(&cfg.Queue.Lifetime, r.Queue.Lifetime, "queue.lifetime", bad)
	if cfg.Queue.RetryMax < cfg.Queue.RetryMin {
		bad("queue.retry_max", "%s is shorter than queue.retry_min (%s)", cfg.Queue.RetryMax, cfg.Queue.RetryMin)
	}
	if r.SMTP.MaxMessageSize != nil {
		if *r.SMTP.MaxMessageSize < 1024 {
			bad("smtp.max_message_size", "%d is too small: give the size in bytes, e.g. 36700160 for 35 MiB", *r.SMTP.MaxMessageSize)
		}
		cfg.SMTP.MaxMessageSize = *r.SMTP.MaxMessageSize
	}

	r.convertHealth(cfg, bad)
	if n := r.Login.MaxFailures; n != nil {
		if *n < 1 {
			bad("login.max_failures", "%d: give at least 1 (failed logins before a user is locked out)", *n)
		} else {
			cfg.Login.MaxFailures = *n
		}
	}
	duration(&cfg.Login.FailureWindow, r.Login.FailureWindow, "login.failure_window", bad)
	duration(&cfg.Login.Lockout, r.Login.Lockout, "login.lockout", bad)
	r.convertWeb(cfg, bad)
	checkDuplicateListen(cfg, bad)
	if m := r.Metrics; m.Listen != nil {
		cfg.Metrics.Listen = *m.Listen
		cfg.Metrics.AllowRemote = m.AllowRemote != nil && *m.AllowRemote
		if _, _, err := net.SplitHostPort(*m.Listen); err != nil {
			bad("metrics.listen", "%q is not host:port", *m.Listen)
		} else if err := CheckLoopback(*m.Listen); err != nil && !cfg.Metrics.AllowRemote {
			bad("metrics.listen", "%v: set metrics.allow_remote = true to serve metrics beyond this host (they name your mailboxes)", err)
		}
	}

	names := map[string]int{}
	locals := map[string]int{}
	for i := range r.Account {
		key := fmt.Sprintf("account[%d]", i+1)
		a := r.Account[i].convert(key, bad)
		a.WarmConnections = cfg.IMAP.WarmConnections
		warm(&a.WarmConnections, r.Account[i].WarmConnections, key+".warm_connections", bad)
		if a.Name != "" {
			if j, dup := names[a.Name]; dup {
				bad(key+".name", "%q is already the name of account[%d]", a.Name, j)
			}
			names[a.Name] = i + 1
		}
		if a.LocalUser != "" {
			lu := strings.ToLower(a.LocalUser)
			if j, dup := locals[lu]; dup {
				bad(key+".local_user", "%q is already the local user of account[%d]", a.LocalUser, j)
			}
			locals[lu] = i + 1
		}
		cfg.Accounts = append(cfg.Accounts, a)
	}
	checkFallbacks(cfg, bad)
	r.convertSendmail(cfg, bad)
	checkPOP3Servers(cfg, bad)
	return cfg, errs
}

// convertSendmail checks [sendmail]: its accounts exist and send mail,
// and each key of allow is a user or an @group name.
func (r *rawConfig) convertSendmail(cfg *Config, bad badFunc) {
	s := r.Sendmail
	outgoing := func(key, name string) {
		for _, a := range cfg.Accounts {
			if a.Name == name {
				if !a.Direction.Outgoing() {
					bad(key, "account %q is configured for incoming mail only (direction): it cannot send", name)
				}
				return
			}
		}
		bad(key, "no account is named %q", name)
	}
	if s.DefaultAccount != nil {
		cfg.Sendmail.DefaultAccount = *s.DefaultAccount
		if *s.DefaultAccount != "" {
			outgoing("sendmail.default_account", *s.DefaultAccount)
		}
	}
	if s.Socket != nil {
		if *s.Socket == "" || !filepath.IsAbs(*s.Socket) {
			bad("sendmail.socket", "%s is not an absolute path", quoteClip(*s.Socket))
		}
		cfg.Sendmail.Socket = *s.Socket
	}
	if cfg.SendmailSocket() == cfg.StatusSocket {
		bad("sendmail.socket", "is the same path as status_socket: give it a path of its own")
	}
	if len(s.Allow) > 0 {
		cfg.Sendmail.Allow = map[string][]string{}
	}
	for who, names := range s.Allow {
		key := "sendmail.allow." + who
		name := strings.TrimPrefix(who, "@")
		if name == "" || hasControl(name) || strings.ContainsAny(name, " :@") {
			bad(key, "%s is not a user name or an @group", quoteClip(who))
		}
		for _, n := range names {
			if n == "*" {
				bad(key, "\"*\" is not an account: name each account this user may send as")
				continue
			}
			outgoing(key, n)
		}
		cfg.Sendmail.Allow[who] = names
	}
}

// convertPOP3 reads [pop3].
func (r *rawConfig) convertPOP3(cfg *Config, bad badFunc) {
	p := r.POP3
	if p.Listen != nil {
		cfg.POP3.Listen = p.Listen
	}
	cfg.POP3.ListenerTLS = p.convert("pop3", cfg.POP3.Listen, bad)
	duration(&cfg.POP3.PreauthTimeout, p.PreauthTimeout, "pop3.preauth_timeout", bad)
	duration(&cfg.POP3.IdleTimeout, p.IdleTimeout, "pop3.idle_timeout", bad)
	if cfg.POP3.IdleTimeout < MinPOP3IdleTimeout {
		bad("pop3.idle_timeout", "%s is shorter than the 10 minutes RFC 1939 §3 guarantees clients: give at least \"10m\"", cfg.POP3.IdleTimeout)
	}
	duration(&cfg.POP3.WriteTimeout, p.WriteTimeout, "pop3.write_timeout", bad)
	limit(&cfg.POP3.MaxSessions, p.MaxSessions, "pop3.max_sessions", bad)
	limit(&cfg.POP3.MaxSessionsPerAddress, p.MaxPerAddress, "pop3.max_sessions_per_address", bad)
}

// convertWeb reads [web], the web console: its address beyond loopback
// only with a certificate (an admin signs in there, and the session
// cookie crosses the network), and the redirect URI the identity
// provider sends the browser back to.
func (r *rawConfig) convertWeb(cfg *Config, bad badFunc) {
	w := r.Web
	if w.Listen != nil {
		cfg.Web.Listen = *w.Listen
	}
	cfg.Web.CertFile, cfg.Web.KeyFile = convertCertKey("web", w.TLSCert, w.TLSKey, bad)
	if cfg.Web.Listen != "" && checkHostPort("web.listen", cfg.Web.Listen, bad) && !cfg.Web.TLS() {
		if err := CheckLoopback(cfg.Web.Listen); err != nil {
			bad("web.listen", "%v: a console beyond loopback needs TLS, because its sign-in and session cookie would cross the network in the clear: set web.tls_cert and web.tls_key "+
				"(it then serves HTTPS), or listen on 127.0.0.1", err)
		}
	}
	if w.RedirectURI != nil {
		cfg.Web.RedirectURI = *w.RedirectURI
	}
	if ru := cfg.Web.RedirectURI; ru != "" {
		const example = "http://localhost:8025" + WebCallbackPath
		u, err := url.Parse(ru)
		switch {
		case err != nil || u.Host == "" || u.Hostname() == "" || (u.Scheme != "https" && u.Scheme != "http"):
			bad("web.redirect_uri", "%s is not an absolute http(s) URL like %q", quoteClip(ru), example)
		case u.User != nil:
			bad("web.redirect_uri", "must not hold a user name or password: give it as registered with the app, like %q", example)
		case u.EscapedPath() != WebCallbackPath || u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(ru, "#"):
			bad("web.redirect_uri", "%s: the path must be %s, with no query or fragment (e.g. %q)", quoteClip(ru), WebCallbackPath, example)
		case u.Scheme == "http" && CheckLoopback(hostPort(u)) != nil:
			bad("web.redirect_uri", "%s: use https (plain http is allowed only for a loopback host: localhost, 127.0.0.0/8 or [::1])", quoteClip(ru))
		}
		if cfg.Web.Listen == "" {
			bad("web.redirect_uri", "needs web.listen: the console is off without it")
		}
	}
	duration(&cfg.Web.SessionIdle, w.SessionIdle, "web.session_idle", bad)
	if d := cfg.Web.SessionIdle; w.SessionIdle != nil && (d < MinWebSessionIdle || d > MaxWebSessionIdle) {
		bad("web.session_idle", "%q is out of range: give from \"1m\" to \"12h\"", *w.SessionIdle)
	}
}

// checkPOP3Servers: while [pop3] listens, every account that serves
// logins needs an upstream POP3 server; the presets of Microsoft and Gmail
// have one, provider "password" and "custom" accounts must name theirs.
func checkPOP3Servers(cfg *Config, bad badFunc) {
	if len(cfg.POP3.Listen) == 0 && len(cfg.POP3.ListenTLS) == 0 {
		return
	}
	for i, a := range cfg.Accounts {
		if a.Direction.Incoming() && a.POP3Server == "" && a.Provider != "" {
			bad(fmt.Sprintf("account[%d].pop3_server", i+1),
				"required for an account with direction %q while [pop3] listens: provider %q has no POP3 server preset (give host:port, e.g. \"mail.example.com:995\")",
				a.Direction, a.Provider)
		}
	}
}

// convertHealth reads [health] (and a top-level on_state_change).
func (r *rawConfig) convertHealth(cfg *Config, bad badFunc) {
	h := r.Health
	if h.RetryBudget != nil {
		if *h.RetryBudget < 1 {
			bad("health.retry_budget", "must be at least 1")
		}
		cfg.Health.RetryBudget = *h.RetryBudget
	}
	duration(&cfg.Health.RetryWindow, h.RetryWindow, "health.retry_window", bad)
	duration(&cfg.Health.HookTimeout, h.HookTimeout, "health.hook_timeout", bad)
	if h.WarnDays != nil {
		if *h.WarnDays < 0 {
			bad("health.warn_days", "must not be negative (0 turns warnings off)")
		}
		cfg.Health.WarnDays = *h.WarnDays
	}
	key, hook := "health.on_state_change", h.OnStateChange
	if r.OnStateChange != nil {
		if hook != nil {
			bad("on_state_change", "set it once: here or in [health]")
		}
		key, hook = "on_state_change", r.OnStateChange
	}
	switch v := hook.(type) {
	case nil:
	case string:
		cfg.Health.OnStateChange = strings.Fields(v)
	case []any:
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				bad(key, "must be a command line (a string) or its words (an array of strings)")
				return
			}
			cfg.Health.OnStateChange = append(cfg.Health.OnStateChange, s)
		}
	default:
		bad(key, "must be a command line (a string) or its words (an array of strings)")
	}
	if hook != nil && len(cfg.Health.OnStateChange) == 0 {
		bad(key, "is empty")
	} else if c := cfg.Health.OnStateChange; len(c) > 0 && !strings.HasPrefix(c[0], "/") {
		bad(key, "%q: give the command's absolute path (it runs without a shell or PATH search)", c[0])
	}
}

// checkDuplicateListen refuses an address that two listeners would bind.
func checkDuplicateListen(cfg *Config, bad badFunc) {
	seen := map[string]string{}
	use := func(key, addr string) {
		if strings.HasSuffix(addr, ":0") {
			return // a free port each
		}
		if prev, dup := seen[addr]; dup {
			bad(key, "%q is already %s", addr, prev)
			return
		}
		seen[addr] = key
	}
	for i, a := range cfg.IMAP.Listen {
		use(fmt.Sprintf("imap.listen[%d]", i), a)
	}
	for i, a := range cfg.SMTP.Listen {
		use(fmt.Sprintf("smtp.listen[%d]", i), a)
	}
	for i, a := range cfg.POP3.Listen {
		use(fmt.Sprintf("pop3.listen[%d]", i), a)
	}
	for _, l := range []struct {
		table string
		addrs []string
	}{{"imap", cfg.IMAP.ListenTLS}, {"pop3", cfg.POP3.ListenTLS}, {"smtp", cfg.SMTP.ListenTLS}} {
		for i, a := range l.addrs {
			use(fmt.Sprintf("%s.listen_tls[%d]", l.table, i), a)
		}
	}
	if cfg.Metrics.Listen != "" {
		use("metrics.listen", cfg.Metrics.Listen)
	}
	if cfg.Web.Listen != "" {
		use("web.listen", cfg.Web.Listen)
	}
}

// checkListen checks a listen address: host:port, and on loopback unless
// the table has a certificate (tls_cert), because legacy clients send
// passwords: beyond the host they must do so inside TLS.
func checkListen(key, addr string, hasCert bool, table string, bad badFunc) {
	if !checkHostPort(key, addr, bad) {
		return
	}
	if err := CheckLoopback(addr); err != nil && !hasCert {
		bad(key, "%v: a listener beyond loopback needs TLS, because legacy clients send passwords: set %s.tls_cert and %s.tls_key "+
			"(clients then use STARTTLS here, or implicit TLS on %s.listen_tls), or listen on 127.0.0.1", err, table, table, table)
	}
}

// checkHostPort reports whether addr is host:port with a port number,
// and reports it as key's error if not.
func checkHostPort(key, addr string, bad badFunc) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		bad(key, "%q is not host:port", addr)
		return false
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		bad(key, "%q: port %q is not a number from 1 to 65535", addr, port)
		return false
	}
	return true
}

func duration(dst *time.Duration, src *string, key string, bad badFunc) {
	if src == nil {
		return
	}
	d, err := time.ParseDuration(*src)
	if err != nil || d <= 0 {
		bad(key, "%q is not a positive duration like \"90s\" or \"30m\"", *src)
		return
	}
	*dst = d
}

// limit sets a session limit; 0 means none.
func limit(dst *int, src *int, key string, bad badFunc) {
	if src == nil {
		return
	}
	if *src < 0 {
		bad(key, "must not be negative (0 means no limit)")
		return
	}
	*dst = *src
}

// warm sets dst, a number of warm upstream connections, from src when
// given: 0 turns them off, more than MaxWarmConnections is refused.
func warm(dst *int, src *int, key string, bad badFunc) {
	if src == nil {
		return
	}
	if *src < 0 || *src > MaxWarmConnections {
		bad(key, "%d is out of range: give 0 (none) to %d", *src, MaxWarmConnections)
		return
	}
	*dst = *src
}

// badFunc records an error about a key.
type badFunc func(key, format string, args ...any)

// convert turns one [[account]] table into an Account, filling defaults
// from its provider; each concern has its own validator below.
func (r *rawAccount) convert(key string, bad badFunc) *Account {
	a := &Account{
		Name:                  r.Name,
		Provider:              r.Provider,
		Email:                 r.Email,
		Login:                 r.Login,
		Tenant:                r.Tenant,
		ClientID:              r.ClientID,
		ClientSecretFile:      r.ClientSecretFile,
		ClientCertificateFile: r.ClientCertFile,
		ClientKeyFile:         r.ClientKeyFile,
		ServiceAccountFile:    r.ServiceAcctFile,
		Grant:                 r.Grant,
		Direction:             Direction(r.Direction),
		LocalUser:             r.LocalUser,
		LocalPasswordHash:     r.LocalPasswordHash,
		TokenURL:              r.TokenURL,
		AuthURL:               r.AuthURL,
		DeviceAuthURL:         r.DeviceAuthURL,
		Issuer:                r.Issuer,
		RedirectPort:          r.RedirectPort,
		Scopes:                r.Scopes,
		IMAPServer:            r.IMAPServer,
		SMTPServer:            r.SMTPServer,
		IMAPSecurity:          Security(r.IMAPSecurity),
		SMTPSecurity:          Security(r.SMTPSecurity),
		POP3Server:            r.POP3Server,
		POP3Security:          Security(r.POP3Security),
		CAFile:                r.CAFile,
		PasswordFile:          r.PasswordFile,
		SendAs:                r.SendAs,
		SMTPConnections:       r.SMTPConnections,
		IMAPConnections:       r.IMAPConnections,
		SMTPRate:              r.SMTPRate,
		TestingApp:            r.TestingApp,
		Transport:             r.Transport,
		GraphURL:              r.GraphURL,
		GraphScopes:           r.GraphScopes,
		FallbackAccount:       r.FallbackAccount,
		FallbackFrom:          r.FallbackFrom,
		FallbackAfter:         15 * time.Minute,
	}
	if r.FallbackAfter != "" {
		d, err := time.ParseDuration(r.FallbackAfter)
		if err != nil || d < 0 {
			bad(key+".fallback_after", "%q is not a duration like \"15m\" (0: at once)", r.FallbackAfter)
		}
		a.FallbackAfter = d
	}
	if r.MaxGrantAge != "" {
		d, err := time.ParseDuration(r.MaxGrantAge)
		if err != nil || d <= 0 {
			bad(key+".max_grant_age", "%q is not a positive duration like \"720h\"", r.MaxGrantAge)
		}
		a.MaxGrantAge = d
	}
	checkIdentity(key, a, bad)
	checkLocalLogin(key, a, bad)
	checkSending(key, a, bad)
	p := checkProvider(key, a, bad)
	if p == nil {
		return a
	}
	applyPreset(p, a)
	checkCredentials(key, a, p, bad)
	checkTransport(key, a, p, r.FallbackAfter != "", bad)
	checkServers(key, a, bad)
	return a
}

// checkTransport: how outgoing mail leaves (SMTP or Microsoft Graph), and
// the fallback mode. Whether the fallback account exists and may serve is
// checkFallbacks' concern, once every account is read.
func checkTransport(key string, a *Account, p *provider.Provider, fallbackAfterSet bool, bad badFunc) {
	switch a.Transport {
	case "":
		a.Transport = TransportSMTP
	case TransportSMTP:
	case TransportGraph:
		if !p.Graph {
			bad(key+".transport", "\"graph\" is Microsoft Graph, which provider %q does not have: use \"smtp\"", a.Provider)
		}
		if !a.Direction.Outgoing() {
			bad(key+".transport", "\"graph\" sends mail, but the account's direction is %q", a.Direction)
		}
	default:
		bad(key+".transport", "unknown transport %q (use smtp or graph)", a.Transport)
	}
	if a.Transport != TransportGraph {
		if a.GraphURL != "" || a.GraphScopes != nil {
			k := ".graph_url"
			if a.GraphURL == "" {
				k = ".graph_scopes"
			}
			bad(key+k, "only used with transport = \"graph\"")
		}
	} else {
		if a.GraphURL == "" {
			a.GraphURL = DefaultGraphURL
		}
		a.GraphURL = strings.TrimRight(a.GraphURL, "/")
		u, err := url.Parse(a.GraphURL)
		switch {
		case err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http"):
			bad(key+".graph_url", "%s is not an http(s) URL like %q", quoteClip(a.GraphURL), DefaultGraphURL)
		case u.User != nil:
			bad(key+".graph_url", "must not hold a user name or password: give only the scheme and host, like %q", DefaultGraphURL)
		case u.Path != "" || u.RawQuery != "" || u.Fragment != "":
			bad(key+".graph_url", "%s: give only the scheme and host (and port), like %q: relayd adds /v1.0/users/... itself", quoteClip(a.GraphURL), DefaultGraphURL)
		case u.Scheme == "http" && CheckLoopback(hostPort(u)) != nil:
			bad(key+".graph_url", "%q sends tokens in the clear: use https (plain http is allowed only on loopback)", a.GraphURL)
		}
		if a.GraphScopes != nil && len(a.GraphScopes) == 0 {
			bad(key+".graph_scopes", "is empty: leave it out for the default (%s/Mail.Send and offline_access)", a.GraphURL)
		}
		if a.GraphScopes == nil {
			if a.AppOnly() {
				a.GraphScopes = []string{a.GraphURL + "/.default"}
			} else {
				a.GraphScopes = []string{a.GraphURL + "/Mail.Send", "offline_access"}
			}
		}
	}
	if a.FallbackAccount == "" && (a.FallbackFrom != "" || fallbackAfterSet) {
		k := ".fallback_from"
		if fallbackAfterSet {
			k = ".fallback_after"
		}
		bad(key+k, "only used with fallback_account: name the account that sends this one's mail while it needs a person")
	}
	switch a.FallbackFrom {
	case "":
		a.FallbackFrom = FallbackRewrite
	case FallbackRewrite, FallbackKeep:
	default:
		bad(key+".fallback_from", "unknown mode %q (use rewrite or keep)", a.FallbackFrom)
	}
}

// hostPort is u's host with its scheme's default port when it has none.
func hostPort(u *url.URL) string {
	if u.Port() != "" {
		return u.Host
	}
	if u.Scheme == "https" {
		return net.JoinHostPort(u.Hostname(), "443")
	}
	return net.JoinHostPort(u.Hostname(), "80")
}

// checkFallbacks: each fallback_account names another account that sends
// mail and has no fallback of its own.
func checkFallbacks(cfg *Config, bad badFunc) {
	byName := map[string]*Account{}
	for _, a := range cfg.Accounts {
		byName[a.Name] = a
	}
	for i, a := range cfg.Accounts {
		if a.FallbackAccount == "" {
			continue
		}
		key := fmt.Sprintf("account[%d].fallback_account", i+1)
		f := byName[a.FallbackAccount]
		switch {
		case !a.Direction.Outgoing():
			bad(key, "account %q does not send mail (direction %q): a fallback has nothing to send", a.Name, a.Direction)
		case a.FallbackAccount == a.Name:
			bad(key, "account %q cannot be its own fallback: name another account that sends mail", a.Name)
		case f == nil:
			bad(key, "no account is named %q", a.FallbackAccount)
		case !f.Direction.Outgoing():
			bad(key, "account %q only receives mail (direction %q): a fallback must send", f.Name, f.Direction)
		case f.FallbackAccount != "":
			bad(key, "account %q has a fallback of its own (%q): a fallback of a fallback is not allowed, name an account without one", f.Name, f.FallbackAccount)
		}
	}
}

// checkIdentity: the account's name, mailbox, sign-in and direction.
func checkIdentity(key string, a *Account, bad badFunc) {
	if a.Name == "" {
		bad(key+".name", "required: a short name used on the command line, e.g. relayd authorize support")
	} else if !validName(a.Name) {
		bad(key+".name", "%s is not allowed: use up to %d ASCII letters, digits, '.', '_', '-', '@' or '+', starting with a letter or digit (e.g. \"support\")",
			quoteClip(a.Name), maxNameLen)
	}
	if a.Email == "" {
		bad(key+".email", "required: the mailbox address")
	} else if hasControl(a.Email) {
		bad(key+".email", "%s holds a control character (a line break?): give the bare address", quoteClip(a.Email))
	} else if !strings.Contains(a.Email, "@") {
		bad(key+".email", "%q is not an email address", a.Email)
	}
	if hasControl(a.Login) {
		bad(key+".login", "%s holds a control character (a line break?): give the bare address", quoteClip(a.Login))
	}
	if a.Login == "" {
		a.Login = a.Email
	}
	if a.Direction == "" {
		a.Direction = DirBoth
	}
	switch a.Direction {
	case DirIncoming, DirOutgoing, DirBoth:
	default:
		bad(key+".direction", "unknown direction %q (use incoming, outgoing or both)", a.Direction)
	}
}

// checkLocalLogin: what the legacy client sends.
func checkLocalLogin(key string, a *Account, bad badFunc) {
	if a.LocalUser == "" {
		a.LocalUser = a.Email
	} else if hasControl(a.LocalUser) {
		bad(key+".local_user", "%s holds a control character: give the user name the legacy client sends", quoteClip(a.LocalUser))
	}
	if a.LocalPasswordHash == "" {
		bad(key+".local_password_hash", "required: create one with 'relayd hash-password'")
	} else if i := strings.IndexFunc(a.LocalPasswordHash, unicode.IsSpace); i >= 0 {
		bad(key+".local_password_hash", "holds whitespace (%q at byte %d), so bcrypt would never match it and every login would fail: paste the hash 'relayd hash-password' printed as one unbroken string", a.LocalPasswordHash[i:i+1], i+1)
	} else if _, err := bcrypt.Cost([]byte(a.LocalPasswordHash)); err != nil {
		bad(key+".local_password_hash", "not a bcrypt hash (every login would fail): create one with 'relayd hash-password'")
	}
}

// checkSending: the envelope policy and sending limits.
func checkSending(key string, a *Account, bad badFunc) {
	for i, addr := range a.SendAs {
		if hasControl(addr) {
			bad(fmt.Sprintf("%s.send_as[%d]", key, i), "%s holds a control character (a line break?): give the bare address", quoteClip(addr))
		} else if !strings.Contains(addr, "@") {
			bad(fmt.Sprintf("%s.send_as[%d]", key, i), "%q is not an email address", addr)
		}
	}
	if a.SMTPConnections < 0 {
		bad(key+".smtp_connections", "must not be negative")
	}
	if a.IMAPConnections < 0 {
		bad(key+".imap_connections", "must not be negative (0 means the provider's limit)")
	}
	if a.SMTPRate < 0 {
		bad(key+".smtp_rate", "must not be negative (0 means no limit)")
	}
	if a.RedirectPort < 0 || a.RedirectPort > 65535 {
		bad(key+".redirect_port", "%d is not a TCP port (1-65535; leave it out for a random one)", a.RedirectPort)
	}
}

// checkProvider returns the account's provider, or nil after reporting
// why there is none.
func checkProvider(key string, a *Account, bad badFunc) *provider.Provider {
	p, known := provider.Lookup(a.Provider)
	switch {
	case a.Provider == "":
		bad(key+".provider", "required: one of %s", strings.Join(Providers, ", "))
	case !known:
		msg := fmt.Sprintf("unknown provider %q", a.Provider)
		if s := suggest(a.Provider, Providers); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		} else {
			msg += " (use one of " + strings.Join(Providers, ", ") + ")"
		}
		bad(key+".provider", "%s", msg)
	}
	for _, s := range []struct {
		key string
		val Security
	}{{"imap_security", a.IMAPSecurity}, {"smtp_security", a.SMTPSecurity}, {"pop3_security", a.POP3Security}} {
		switch s.val {
		case "", SecurityTLS, SecuritySTARTTLS, SecurityNone:
		default:
			bad(key+"."+s.key, "unknown security %q (use tls, starttls or none)", s.val)
		}
	}
	return p
}

// checkCredentials: how the account logs in upstream.
func checkCredentials(key string, a *Account, p *provider.Provider, bad badFunc) {
	if !p.OAuth {
		if a.PasswordFile == "" {
			bad(key+".password_file", "required for provider %q: a file holding the upstream password", a.Provider)
		}
		for k, v := range map[string]string{"client_id": a.ClientID, "client_secret_file": a.ClientSecretFile, "token_url": a.TokenURL} {
			if v != "" {
				bad(key+"."+k, "not used with provider %q", a.Provider)
			}
		}
		return
	}
	if a.Grant == "" {
		a.Grant = p.Grants[0]
	}
	if a.ClientID == "" && a.Grant != GrantServiceAccount {
		bad(key+".client_id", "required: the OAuth application (client) id")
	}
	if a.TokenURL == "" {
		bad(key+".token_url", "required for provider %q", a.Provider)
	}
	if a.PasswordFile != "" {
		bad(key+".password_file", "only used with provider \"password\"")
	}
	switch a.Grant {
	case GrantRefreshToken, GrantClientCredentials, GrantServiceAccount:
		if !p.AllowsGrant(a.Grant) {
			bad(key+".grant", "%q does not support the %s grant", a.Provider, a.Grant)
			return
		}
	default:
		bad(key+".grant", "unknown grant %q (use refresh_token, client_credentials or service_account)", a.Grant)
		return
	}
	switch a.Grant {
	case GrantClientCredentials:
		switch {
		case a.ClientSecretFile == "" && a.ClientCertificateFile == "":
			bad(key+".client_secret_file", "grant \"client_credentials\" needs client_secret_file or client_certificate_file")
		case a.ClientSecretFile != "" && a.ClientCertificateFile != "":
			bad(key+".client_certificate_file", "use client_secret_file or client_certificate_file, not both")
		}
		if slices.Contains(p.MultiTenantAliases, a.Tenant) {
			bad(key+".tenant", "grant \"client_credentials\" needs the tenant id or domain, not %q", a.Tenant)
		}
	case GrantServiceAccount:
		if a.ServiceAccountFile == "" {
			bad(key+".service_account_file", "required with grant \"service_account\": the service account's JSON key")
		}
	}
	if a.Grant != GrantClientCredentials && (a.ClientCertificateFile != "" || a.ClientKeyFile != "") {
		bad(key+".client_certificate_file", "only used with grant \"client_credentials\"")
	}
	if a.Grant != GrantServiceAccount && a.ServiceAccountFile != "" {
		bad(key+".service_account_file", "only used with grant \"service_account\"")
	}
}

// checkServers: the upstream IMAP and SMTP servers the direction needs,
// and the POP3 server when one is named (checkPOP3Servers requires one
// while [pop3] listens).
func checkServers(key string, a *Account, bad badFunc) {
	if a.Direction.Incoming() {
		if a.IMAPServer == "" {
			bad(key+".imap_server", "required for an account with direction %q", a.Direction)
		} else {
			checkUpstream(key, "imap", a.IMAPServer, a.IMAPSecurity, bad)
		}
	}
	if a.POP3Server != "" {
		checkUpstream(key, "pop3", a.POP3Server, a.POP3Security, bad)
	}
	if a.Direction.Outgoing() && !a.Graph() {
		if a.SMTPServer == "" {
			bad(key+".smtp_server", "required for an account with direction %q", a.Direction)
		} else {
			checkUpstream(key, "smtp", a.SMTPServer, a.SMTPSecurity, bad)
		}
	}
}

func checkUpstream(key, proto, addr string, sec Security, bad badFunc) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		bad(key+"."+proto+"_server", "%q is not host:port", addr)
		return
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		bad(key+"."+proto+"_server", "%q: port %q is not a number from 1 to 65535", addr, port)
		return
	}
	if sec == SecurityNone {
		if err := CheckLoopback(addr); err != nil {
			bad(key+"."+proto+"_security", "\"none\" sends tokens in the clear and is allowed only for a loopback server, but %v", err)
		}
	}
}

// CheckFiles reports the secret, password and CA files the configuration
// names that relayd cannot read now, and an admin_group that does not
// exist. Parse does not look at the system; serve and a reload call this.
func (c *Config) CheckFiles() []error { return c.CheckFilesAs(nil) }

// CheckFilesAs is CheckFiles for files that svc must read, whoever runs
// it (check-config as root for the service user): a file svc cannot read
// is an error wrapping ErrUnreadable. With svc nil, the files must be
// readable by this process.
func (c *Config) CheckFilesAs(svc *ServiceUser) []error {
	var errs []error
	if _, err := LookupGroup(c.AdminGroup); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, c.checkSendmailUsers()...)
	if err := statedir.CheckPerms(c.StateDir); err != nil {
		errs = append(errs, &Error{Key: "state_dir", Msg: err.Error(), Err: err})
	}
	errs = append(errs, c.checkListenerFiles()...)
	for i, a := range c.Accounts {
		for _, f := range []struct {
			key, path string
			secret    bool
		}{
			{"client_secret_file", a.ClientSecretFile, true}, {"password_file", a.PasswordFile, true}, {"ca_file", a.CAFile, false},
			{"client_certificate_file", a.ClientCertificateFile, true}, {"client_key_file", a.ClientKeyFile, true},
			{"service_account_file", a.ServiceAccountFile, true},
		} {
			if f.path == "" {
				continue
			}
			key := fmt.Sprintf("account[%d].%s", i+1, f.key)
			if svc != nil {
				if err := checkReadableBy(key, f.path, svc); err != nil {
					errs = append(errs, err)
					continue
				}
			} else if _, err := os.ReadFile(f.path); err != nil {
				errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf("cannot read %s: %v", f.path, unwrapPathErr(err)), Err: err})
				continue
			}
			fi, err := os.Stat(f.path)
			if err != nil {
				continue
			}
			what, layout := "a secret", "root:relayd 0640"
			if !f.secret {
				what, layout = "the CAs trusted for the upstream servers", "root 0644"
			}
			switch perm := fi.Mode().Perm(); {
			case perm&0o022 != 0:
				errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(
					"%s holds %s but others may change it (mode %04o): chmod go-w %s (%s is the normal layout)",
					f.path, what, perm, f.path, layout)})
			case f.secret && perm&0o004 != 0:
				errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(
					"%s holds a secret but everyone may read it (mode %04o): chmod o-r %s (root:relayd 0640 is the normal layout)",
					f.path, perm, f.path)})
			}
		}
	}
	return errs
}

// checkSendmailUsers reports the users and groups of [sendmail] allow that
// do not exist on this system.
func (c *Config) checkSendmailUsers() []error {
	var errs []error
	for _, who := range slices.Sorted(maps.Keys(c.Sendmail.Allow)) {
		key := "sendmail.allow." + who
		if g, ok := strings.CutPrefix(who, "@"); ok {
			if _, err := user.LookupGroup(g); err != nil {
				errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf("group %q: %v", g, err), Err: err})
			}
		} else if _, err := user.Lookup(who); err != nil {
			errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf("user %q: %v", who, err), Err: err})
		}
	}
	return errs
}

// checkListenerFiles loads each table's certificate and key as relayd
// would (the listeners' and the web console's), and refuses a key others
// may read or anyone but its owner may change.
func (c *Config) checkListenerFiles() []error {
	type pair struct{ table, cert, key string }
	var pairs []pair
	for _, l := range c.Listeners() {
		if l.HasCert() {
			pairs = append(pairs, pair{l.Table, l.CertFile, l.KeyFile})
		}
	}
	if c.Web.TLS() {
		pairs = append(pairs, pair{"web", c.Web.CertFile, c.Web.KeyFile})
	}
	var errs []error
	for _, p := range pairs {
		if _, err := tlscert.Load(p.table, p.cert, p.key); err != nil {
			errs = append(errs, err)
			continue
		}
		fi, err := os.Stat(p.key)
		if err != nil {
			continue
		}
		if perm := fi.Mode().Perm(); perm&0o026 != 0 {
			errs = append(errs, &Error{Key: p.table + ".tls_key", Msg: fmt.Sprintf(
				"%s holds a private key but others may read or change it (mode %04o): chmod o-rw,g-w %s (root:relayd 0640 is the normal layout)",
				p.key, perm, p.key)})
		}
	}
	return errs
}

// ModeWarnings returns what is unsafe, though not fatal, about the
// permissions of the configuration file at path, which c was read from: a
// file everyone may read that holds local password hashes, which anyone
// on the host could then try to crack offline.
func (c *Config) ModeWarnings(path string) []string {
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm()&0o004 == 0 {
		return nil
	}
	for _, a := range c.Accounts {
		if a.LocalPasswordHash != "" {
			return []string{fmt.Sprintf("%s holds local_password_hash but everyone may read it (mode %04o): chmod o-r %s (root:relayd 0640 is the normal layout)",
				path, fi.Mode().Perm(), path)}
		}
	}
	return nil
}

// maxNameLen is the longest account name.
const maxNameLen = 64

// validName reports whether name may name an account: it shows up in file
// names, command lines, log lines and metric labels.
func validName(name string) bool {
	if len(name) == 0 || len(name) > maxNameLen {
		return false
	}
	for i, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case i > 0 && strings.IndexByte("._-@+", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// hasControl reports whether s holds a control character (C0, DEL or C1),
// which has no place in an address or user name.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}

// quoteClip quotes s for an error message, escaping control characters
// and clipping it to a readable length.
func quoteClip(s string) string {
	const max = 80
	if len(s) <= max {
		return strconv.Quote(s)
	}
	return strconv.Quote(s[:max]) + fmt.Sprintf("… (%d bytes)", len(s))
}

// LookupGroup returns the id of the group named name, or -1 for "". The
// error names admin_group, the key that names groups.
func LookupGroup(name string) (int, error) {
	if name == "" {
		return -1, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		var unknown user.UnknownGroupError
		if errors.As(err, &unknown) {
			return -1, &Error{Key: "admin_group", Msg: fmt.Sprintf("group %q does not exist: create it (groupadd %s) or remove admin_group", name, name), Err: err}
		}
		return -1, &Error{Key: "admin_group", Msg: fmt.Sprintf("looking up group %q: %v", name, err), Err: err}
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, &Error{Key: "admin_group", Msg: fmt.Sprintf("group %q has the id %q, which is not a number", name, g.Gid)}
	}
	return gid, nil
}

func unwrapPathErr(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// suggest returns the candidate within edit distance 2 of s, if any.
func suggest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(strings.ToLower(s), c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
