// Package doctor checks relayd's set-up end to end, for 'relayd doctor':
// the configuration and the permissions of the files it names (as the user
// the service runs as), DNS, TCP and TLS to every upstream (the IMAP and
// SMTP servers, the token endpoint, Microsoft Graph), the token endpoint
// and this machine's clock against its Date header (RFC 9110 §6.6.1), and,
// with the account's tokens, the grant refreshed once, the scopes granted
// against those the account needs (RFC 6749 §5.1, per resource), an
// upstream IMAP and SMTP login through package upstream, and for a Graph
// account the Graph token's Mail.Send permission.
//
// Checks are data: each gives Results ({Account, Check, OK, Warn, Skipped,
// Detail, Fix}); nothing here prints but Write. Accounts and their checks
// run concurrently, each check within Options.Timeout. The checks that need
// a token (Credentials) take an *auth.Account: 'relayd doctor' has the
// running daemon run them with its own token sources (status socket, admin
// role), so that a refresh token is never rotated behind its back, or runs
// them itself when no daemon runs. Login results are reported to a
// throwaway condition, never the account's: doctor neither holds nor
// releases mail. Results never hold a token or a secret.
package doctor

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/safetext"
)

// Result is the outcome of one check.
type Result struct {
	// Account is the account checked; "" for the configuration's own
	// checks.
	Account string `json:"account"`
	// Check names what was checked: "config", "file.client_secret_file",
	// "dns.imap", "tcp.smtp", "tls.token", "token_endpoint", "clock",
	// "grant", "scopes", "login.imap", "login.smtp", "graph.mail_send", ….
	Check string `json:"check"`
	// OK is true when the check passed, warnings included.
	OK bool `json:"ok"`
	// Warn marks a check that passed with something to look at.
	Warn bool `json:"warn,omitempty"`
	// Skipped marks a check that did not run; Detail says why.
	Skipped bool   `json:"skipped,omitempty"`
	Detail  string `json:"detail"`
	// Fix says what to do, when there is something to do.
	Fix string `json:"fix"`
}

// Failed reports whether r is a check that ran and failed.
func (r Result) Failed() bool { return !r.OK && !r.Skipped }

func pass(acct, check, detail string) Result {
	return Result{Account: acct, Check: check, OK: true, Detail: detail}
}

func warn(acct, check, detail, fix string) Result {
	return Result{Account: acct, Check: check, OK: true, Warn: true, Detail: detail, Fix: fix}
}

func fail(acct, check, detail, fix string) Result {
	return Result{Account: acct, Check: check, Detail: detail, Fix: fix}
}

func skip(acct, check, why string) Result {
	return Result{Account: acct, Check: check, Skipped: true, Detail: "skipped: " + why}
}

// Exit statuses of relayd doctor.
const (
	ExitOK      = 0 // every check passed
	ExitWarning = 1 // only warnings (or checks skipped)
	ExitFailed  = 2 // something failed
)

// Code is the exit status for results: ExitFailed when a check failed,
// ExitWarning when one warned or was skipped, else ExitOK.
func Code(results []Result) int {
	code := ExitOK
	for _, r := range results {
		switch {
		case r.Failed():
			return ExitFailed
		case r.Warn || r.Skipped:
			code = ExitWarning
		}
	}
	return code
}

// Options configure the checks. Zero fields take the defaults named.
type Options struct {
	// Timeout bounds each check. Default 10 seconds.
	Timeout time.Duration
	// Now is this machine's clock. Default time.Now.
	Now func() time.Time
	// Dialer dials upstream servers. Default: a net.Dialer.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// Resolver looks up host names. Default net.DefaultResolver.
	Resolver *net.Resolver
	// HTTPClient asks the token endpoint for its Date. Default: a client
	// whose requests end after Timeout.
	HTTPClient *http.Client
	// ServiceUser is who the service runs as, whose access to the
	// configured files is checked. Default ServiceUserOf(state_dir).
	ServiceUser *User
	// CertWarning: a certificate that expires within this long is a
	// warning. Default 14 days.
	CertWarning time.Duration
	// SendTest sends a test message from each sending account's mailbox
	// to itself (SendTest); without it doctor sends nothing.
	SendTest bool
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Dialer == nil {
		d := &net.Dialer{}
		o.Dialer = d.DialContext
	}
	if o.Resolver == nil {
		o.Resolver = net.DefaultResolver
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: o.Timeout}
	}
	if o.CertWarning <= 0 {
		o.CertWarning = 14 * 24 * time.Hour
	}
	return o
}

// CredentialsFunc runs the checks of account a that need its tokens:
// Credentials, in this process or in the daemon, or Skipped.
type CredentialsFunc func(ctx context.Context, a *config.Account) []Result

// Run checks cfg, read from path: the configuration's own checks, then
// the accounts named (all when names is empty), all concurrently. creds
// runs each account's checks that need its tokens; nil skips them.
func Run(ctx context.Context, cfg *config.Config, path string, names []string, creds CredentialsFunc, o Options) []Result {
	o = o.withDefaults()
	if o.ServiceUser == nil {
		o.ServiceUser = ServiceUserOf(cfg.StateDir)
	}
	var accts []*config.Account
	if len(names) == 0 {
		accts = cfg.Accounts
	} else {
		for _, n := range names {
			if a := cfg.Account(n); a != nil {
				accts = append(accts, a)
			}
		}
	}
	if creds == nil {
		creds = func(_ context.Context, a *config.Account) []Result {
			return Skipped(a, "no way to use the account's tokens was given")
		}
	}
	parts := make([][]Result, len(accts)+1)
	var wg sync.WaitGroup
	wg.Go(func() { parts[0] = Config(cfg, path, o) })
	for i, a := range accts {
		wg.Go(func() { parts[i+1] = Account(ctx, a, creds, o) })
	}
	wg.Wait()
	var all []Result
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// Account runs every check of account a, concurrently: its files, each
// upstream's DNS, TCP and TLS, the token endpoint and the clock, and
// through creds those that need its tokens. Results come in a fixed order.
func Account(ctx context.Context, a *config.Account, creds CredentialsFunc, o Options) []Result {
	o = o.withDefaults()
	if o.ServiceUser == nil {
		o.ServiceUser = ServiceUserOf("")
	}
	var groups []func() []Result
	groups = append(groups, func() []Result { return Files(a, o.ServiceUser) })
	for _, up := range upstreams(a) {
		groups = append(groups, func() []Result { return checkUpstream(ctx, a, up, o) })
	}
	if creds != nil {
		groups = append(groups, func() []Result { return creds(ctx, a) })
	}
	parts := make([][]Result, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { parts[i] = g() })
	}
	wg.Wait()
	var all []Result
	for _, p := range parts {
		all = append(all, p...)
	}
	return all
}

// Write prints results for people: a heading per account, a line per
// check with ✓ (passed), ! (warning), ✗ (failed) or – (skipped), the fix
// under it, and a summary. Text from elsewhere (a server's reply, a
// certificate's names) is escaped for the terminal.
func Write(w io.Writer, results []Result) {
	last := "\x00"
	var failed, warned, skipped, passed int
	for _, r := range results {
		if r.Account != last {
			if r.Account == "" {
				fmt.Fprintln(w, "relayd")
			} else {
				fmt.Fprintf(w, "account %s\n", safetext.Terminal(r.Account))
			}
			last = r.Account
		}
		mark := "✓"
		switch {
		case r.Skipped:
			mark = "–"
			skipped++
		case !r.OK:
			mark = "✗"
			failed++
		case r.Warn:
			mark = "!"
			warned++
		default:
			passed++
		}
		fmt.Fprintf(w, "  %s %-17s %s\n", mark, r.Check, safetext.Terminal(r.Detail))
		if r.Fix != "" {
			fmt.Fprintf(w, "      fix: %s\n", safetext.Terminal(r.Fix))
		}
	}
	var sum []string
	for _, c := range []struct {
		n    int
		what string
	}{{failed, "failed"}, {warned, "warned"}, {skipped, "skipped"}, {passed, "passed"}} {
		if c.n > 0 {
			sum = append(sum, fmt.Sprintf("%d %s", c.n, c.what))
		}
	}
	fmt.Fprintf(w, "%s\n", strings.Join(sum, ", "))
}

// Skipped reports the checks of account a that need its tokens as
// skipped, with why.
func Skipped(a *config.Account, why string) []Result {
	var r []Result
	if a.OAuth() {
		r = append(r, skip(a.Name, "grant", why), skip(a.Name, "scopes", why))
	}
	if a.Direction.Incoming() {
		r = append(r, skip(a.Name, "login.imap", why))
	}
	if a.Direction.Outgoing() && !a.Graph() {
		r = append(r, skip(a.Name, "login.smtp", why))
	}
	if a.Graph() && a.OAuth() {
		r = append(r, skip(a.Name, "graph.mail_send", why))
	}
	return r
}

// hostname is this machine's name, for messages.
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "this machine"
	}
	return h
}
