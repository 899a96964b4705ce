package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"strings"
	"syscall"
	"time"

	"golang.org/x/term"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/doctor"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/provider"
	"github.com/relayd/relayd/signin"
	"github.com/relayd/relayd/status"
)

// runAuthorize gets a grant for an account and hands it to the running
// daemon (or stores it): by the account's default sign-in (device code for
// Microsoft, the browser for Google), by the one a flag names, or by
// importing a refresh token. Ctrl-C stores nothing.
func runAuthorize(args []string) error {
	return terminalSafe(authorize(args))
}

// terminalSafe returns err with its text fit for a terminal: the
// identity provider's words in it (an error=, an ID token's claims) may
// hold escape sequences. errors.Is and errors.As still see err.
func terminalSafe(err error) error {
	if err == nil || safetext.Terminal(err.Error()) == err.Error() {
		return err
	}
	return &safeError{err}
}

type safeError struct{ err error }

func (e *safeError) Error() string { return safetext.Terminal(e.err.Error()) }
func (e *safeError) Unwrap() error { return e.err }

func authorize(args []string) error {
	fs := newFlagSet("authorize")
	cfgPath := configFlag(fs)
	rtFile := fs.String("refresh-token-file", "", "import the refresh token in `file` (issued to this account's client_id)")
	device := fs.Bool("device", false, "sign in with a device code, on any browser")
	browser := fs.Bool("browser", false, "sign in in a browser, redirected to this machine (or paste the final address)")
	progress := fs.Duration("progress-interval", 30*time.Second, "without a terminal, print how long the device code has left this often")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	name, err := oneName(pos, "account name")
	if err != nil {
		return err
	}
	if n := countTrue(*device, *browser, *rtFile != ""); n > 1 {
		return usagef("use one of --device, --browser and --refresh-token-file")
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	a := cfg.Account(name)
	if a == nil {
		return fmt.Errorf("no account %q in %s (accounts: %s)", name, *cfgPath, strings.Join(cfg.AccountNames(), ", "))
	}
	if !a.OAuth() {
		return fmt.Errorf("account %q uses provider \"password\": put the upstream password in %s instead", name, a.PasswordFile)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	var g *auth.Grant
	switch {
	case *rtFile != "":
		rt, err := auth.ReadSecretFile(*rtFile)
		if err != nil {
			return fmt.Errorf("reading refresh token: %w", err)
		}
		ictx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		if g, err = auth.ImportRefreshToken(ictx, a, nil, rt); err != nil {
			return err
		}
	case a.AppOnly():
		return checkClientCredentials(ctx, a)
	default:
		flow := a.Flow
		if *device {
			flow = provider.FlowDevice
		} else if *browser {
			flow = provider.FlowBrowser
		}
		si := &signin.SignIn{Account: a, Out: os.Stdout, In: os.Stdin, Terminal: term.IsTerminal(int(os.Stdout.Fd())),
			Progress: *progress, SSHTarget: sshTarget()}
		if flow == provider.FlowDevice {
			g, err = si.Device(ctx)
		} else {
			g, err = si.Browser(ctx)
		}
		if err != nil {
			return err
		}
		fmt.Printf("signed in as %s\n", safetext.Line(g.Subject))
	}
	return handOver(ctx, cfg, name, g)
}

func countTrue(bs ...bool) int {
	n := 0
	for _, b := range bs {
		if b {
			n++
		}
	}
	return n
}

// checkClientCredentials: app-only access has no grant to store; checking
// that the credentials work is what an admin wants to know.
func checkClientCredentials(ctx context.Context, a *config.Account) error {
	dir, err := os.MkdirTemp("", "relayd-authorize-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src, err := auth.NewSource(auth.SourceOptions{Account: a, Store: &auth.Store{Dir: dir}})
	if err != nil {
		return err
	}
	if _, err := src.Token(ctx); err != nil {
		return unreachableTokenEndpoint(a, err)
	}
	if a.Graph() {
		if _, err := src.TokenFor(ctx, auth.ResourceGraph); err != nil {
			return unreachableTokenEndpoint(a, err)
		}
	}
	fmt.Printf("account %q: the app-only credentials (%s) work; nothing needs storing\n", a.Name, a.Grant)
	return nil
}

// unreachableTokenEndpoint turns a token source's "unreachable, relayd
// keeps retrying" (right for the daemon) into what a one-off check from
// the command line should say: the token endpoint could not be reached,
// why, and how a proxy is set. Other errors pass unchanged.
func unreachableTokenEndpoint(a *config.Account, err error) error {
	he := health.AsError(err)
	if he == nil || he.Reason != health.ReasonTokenEndpointUnreachable {
		return err
	}
	return fmt.Errorf("account %q: could not reach the token endpoint %s (%s); the app-only credentials were not checked. Check this machine's DNS and network; %s",
		a.Name, a.TokenURL, he.Detail(), auth.ProxyHint)
}

// checkGraphToken gets the Graph token of a Graph account from the grant
// just stored, and stores it with the grant: a missing Mail.Send consent
// shows now, not at the first message, and the daemon starts with the
// token. A failure is a warning: the grant serves IMAP and the token
// endpoint's answer says what Graph needs.
func checkGraphToken(ctx context.Context, a *config.Account, store *auth.Store) {
	src, err := auth.NewSource(auth.SourceOptions{Account: a, Store: store,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	var tok string
	if err == nil {
		tok, err = src.TokenFor(ctx, auth.ResourceGraph)
	}
	if err != nil {
		msg := err.Error()
		if he := health.AsError(err); he != nil {
			msg = he.Advice
		}
		fmt.Printf("warning: account %q sends through Microsoft Graph, but no Graph token comes with this grant: %s\n", a.Name, msg)
		return
	}
	if p, err := doctor.ReadPermissions(tok); err == nil && !p.Has("Mail.Send") {
		fmt.Printf("warning: account %q sends through Microsoft Graph, but its Graph token does not allow Mail.Send: grant the permission with admin consent, or sign in with 'relayd authorize --browser %s'\n", a.Name, a.Name)
		return
	}
	fmt.Printf("account %q: the grant also gets a Microsoft Graph token for sending\n", a.Name)
}

// sshTarget is "user@host" for the ssh -L line of the browser sign-in.
func sshTarget() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		if u, err := user.Current(); err == nil {
			name = u.Username
		}
	}
	host, _ := os.Hostname()
	if name == "" || host == "" {
		return ""
	}
	return name + "@" + host
}

// handOver gives g to the running daemon, which checks it and uses it at
// once; when no daemon runs, it writes the token store directly.
func handOver(ctx context.Context, cfg *config.Config, name string, g *auth.Grant) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := status.NewClient(cfg.StatusSocket).InstallGrant(ctx, name, g)
	switch {
	case err == nil:
		fmt.Printf("account %q authorized; the running daemon checked the grant and uses it now\n", name)
		return nil
	case errors.Is(err, status.ErrNotRunning):
		// The key is read as the caller (root) before becoming the state
		// directory's owner.
		store, err := offlineStore(cfg)
		if err != nil {
			return err
		}
		if err := dropToStateOwner(cfg.StateDir); err != nil {
			return err
		}
		if err := store.Replace(name, g); err != nil {
			return err
		}
		fmt.Printf("account %q authorized; relayd is not running, the grant is stored in %s for its next start\n", name, cfg.StateDir)
		if a := cfg.Account(name); a != nil && a.Graph() {
			checkGraphToken(ctx, a, store)
		}
		return nil
	default:
		return err
	}
}
