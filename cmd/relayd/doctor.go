package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/doctor"
	"github.com/relayd/relayd/status"
)

const doctorMore = `Checks run concurrently, each within --timeout. While relayd runs, the grant
is refreshed and the logins are made inside the daemon (the status socket's
admin role: root, relayd's user, admin_group); a reader gets the other
checks, and those as skipped. With relayd stopped, doctor uses the stored
grants and writes one only when the provider rotated its refresh token.
doctor never changes the queue.`

// runDoctor checks the accounts' set-up end to end (package doctor) and
// prints a line per check: exit 0 when all passed, 1 when some only
// warned (or were skipped), 2 when one failed. The checks that need an
// account's tokens run inside the running daemon (status socket, admin
// role), so that nothing is refreshed behind its back; a reader gets the
// others and those as skipped. With no daemon running, doctor uses the
// stored grants itself and stores one only when the provider rotated its
// refresh token. It never changes the queue.
func runDoctor(args []string) error {
	fs := newFlagSet("doctor")
	cfgPath := configFlag(fs)
	socket := socketFlag(fs)
	asJSON := fs.Bool("json", false, "print a JSON array of {account, check, ok, detail, fix} (and warn, skipped when so)")
	timeout := fs.Duration("timeout", 10*time.Second, "give up each check after `duration`")
	sendTest := fs.Bool("send-test", false, "also send a test message from each sending account's mailbox to itself, through its transport (SMTP or Microsoft Graph)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usagef("expected at most one account name")
	}
	out := func(rs []doctor.Result) error {
		if *asJSON {
			if rs == nil {
				rs = []doctor.Result{}
			}
			enc := json.NewEncoder(os.Stdout)
			enc.SetIndent("", "  ")
			enc.Encode(rs)
		} else {
			doctor.Write(os.Stdout, rs)
		}
		if code := doctor.Code(rs); code != doctor.ExitOK {
			return exitError{code}
		}
		return nil
	}
	cfg, err := config.Load(*cfgPath)
	if err != nil {
		return out([]doctor.Result{{Check: "config", Detail: err.Error(),
			Fix: "correct the configuration: every error names its key ('relayd check-config " + *cfgPath + "' says the same)"}})
	}
	if len(pos) == 1 && cfg.Account(pos[0]) == nil {
		return usagef("no account %q in %s (accounts: %s)", pos[0], *cfgPath, strings.Join(cfg.AccountNames(), ", "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	path := *socket
	if path == "" {
		path = cfg.StatusSocket
	}
	opts := doctor.Options{Timeout: *timeout, SendTest: *sendTest}
	d := &doctorRun{cfg: cfg, opts: opts, client: status.NewClient(path), socket: path, sem: make(chan struct{}, 2)}
	d.mode = d.probe(ctx)
	if d.mode == modeOffline {
		// The key is read now, as the caller: storeRotated may become
		// the state directory's owner later.
		d.store, d.storeErr = offlineStore(cfg)
	}
	results := doctor.Run(ctx, cfg, *cfgPath, pos, d.credentials, opts)
	results = insertAfter(results, "", d.daemonResult())
	for _, r := range d.storeRotated(ctx) {
		results = insertAfter(results, r.Account, r)
	}
	return out(results)
}

// doctorRun is one relayd doctor: where the checks that need tokens run.
type doctorRun struct {
	cfg    *config.Config
	opts   doctor.Options
	client *status.Client
	socket string
	mode   doctorMode
	// probeErr is why the daemon could not be asked (modeNoSocket).
	probeErr error
	// sem bounds the calls to the daemon at once: the socket caps each
	// user's connections.
	sem chan struct{}

	mu sync.Mutex
	// refused is set when the daemon refused a call for want of the
	// admin role.
	refused bool
	// rotated are grants whose refresh token the provider rotated while
	// doctor, with no daemon running, checked them.
	rotated []rotatedGrant
	// store is the token store with its keys when no daemon runs, or
	// storeErr why it cannot be used (a key this user cannot read).
	store    *auth.Store
	storeErr error
}

type doctorMode int

const (
	modeDaemon   doctorMode = iota // the daemon runs the token checks
	modeOffline                    // no daemon: doctor uses the store itself
	modeNoSocket                   // a daemon may run but cannot be asked
)

type rotatedGrant struct {
	name     string
	oldToken string
	grant    *auth.Grant
}

// probe finds out whether a daemon answers on the status socket.
func (d *doctorRun) probe(ctx context.Context) doctorMode {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err := d.client.Status(ctx)
	switch {
	case err == nil:
		return modeDaemon
	case errors.Is(err, status.ErrNotRunning):
		return modeOffline
	default:
		d.probeErr = err
		return modeNoSocket
	}
}

const readerWhy = "refreshing needs the status socket's admin role (root, relayd's user or a member of admin_group): the running daemon refreshes, so that no refresh token is rotated behind its back"

// daemonResult says where the checks that need tokens ran.
func (d *doctorRun) daemonResult() doctor.Result {
	r := doctor.Result{Check: "daemon", OK: true}
	switch {
	case d.mode == modeOffline:
		r.Detail = fmt.Sprintf("relayd is not running (%s): doctor used the stored grants itself, and stores one only when the provider rotated its refresh token", d.socket)
	case d.mode == modeNoSocket:
		r.Warn = true
		r.Detail = fmt.Sprintf("the status socket cannot be used (%v): the checks that need a token were skipped, since a running daemon must make the refresh", d.probeErr)
		r.Fix = "run relayd doctor as root, relayd's user or a member of admin_group"
	case d.refused:
		r.Warn = true
		r.Detail = "relayd is running, and this user may only read its status: the checks that need a token were skipped"
		r.Fix = "run relayd doctor as root, relayd's user or a member of admin_group for every check"
	default:
		r.Detail = fmt.Sprintf("relayd is running (%s): the refresh and the logins ran inside it, with its own token sources", d.socket)
	}
	return r
}

// credentials runs account a's checks that need its tokens where they
// belong (doctor.CredentialsFunc).
func (d *doctorRun) credentials(ctx context.Context, a *config.Account) []doctor.Result {
	switch d.mode {
	case modeNoSocket:
		return doctor.Skipped(a, "the status socket cannot be used, and a running daemon must make the refresh")
	case modeOffline:
		return d.offline(ctx, a)
	}
	d.sem <- struct{}{}
	defer func() { <-d.sem }()
	ctx, cancel := context.WithTimeout(ctx, 3*d.opts.Timeout+10*time.Second)
	defer cancel()
	rs, err := d.client.Doctor(ctx, a.Name, status.DoctorRequest{
		TimeoutSeconds: int((d.opts.Timeout + time.Second - 1) / time.Second), SendTest: d.opts.SendTest})
	switch {
	case err == nil:
		return rs
	case errors.Is(err, status.ErrPermission):
		d.mu.Lock()
		d.refused = true
		d.mu.Unlock()
		return doctor.Skipped(a, readerWhy)
	case errors.Is(err, status.ErrUnknownAccount):
		return []doctor.Result{{Account: a.Name, Check: "daemon", Detail: "the running daemon has no account " + a.Name,
			Fix: "run 'relayd reload' so that the daemon reads the configuration doctor checked"}}
	default:
		return []doctor.Result{{Account: a.Name, Check: "daemon", Detail: fmt.Sprintf("asking the daemon to check the account: %v", err),
			Fix: "see the daemon's log (journalctl -u relayd)"}}
	}
}

// offline runs account a's token checks in this process, with no daemon
// running: from a copy of its stored grant, so that the store is written
// only when the provider rotated the refresh token (storeRotated).
func (d *doctorRun) offline(ctx context.Context, a *config.Account) []doctor.Result {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if !a.OAuth() {
		acct, err := auth.NewAccount(a, nil)
		if err != nil {
			return doctor.Skipped(a, err.Error())
		}
		return doctor.Credentials(ctx, acct, d.opts)
	}
	failGrant := func(detail, fix string) []doctor.Result {
		rs := []doctor.Result{{Account: a.Name, Check: "grant", Detail: detail, Fix: fix}}
		for _, r := range doctor.Skipped(a, "no grant to check") {
			if r.Check != "grant" {
				rs = append(rs, r)
			}
		}
		return rs
	}
	if d.storeErr != nil {
		return failGrant(d.storeErr.Error(), "run relayd doctor as root or as relayd's user, who can read key_file; or start relayd, and doctor's checks run inside it")
	}
	g, err := d.store.Load(a.Name)
	switch {
	case errors.Is(err, auth.ErrUndecryptable):
		return failGrant(err.Error(), "restore the key the grant was encrypted under to key_file (from its backup), or run 'relayd authorize "+a.Name+"' for a new grant")
	case errors.Is(err, auth.ErrNoGrant) && !a.AppOnly():
		return failGrant(fmt.Sprintf("no grant stored in %s", d.cfg.StateDir), fmt.Sprintf("run 'relayd authorize %s'", a.Name))
	case errors.Is(err, auth.ErrNoGrant):
		g = nil
	case err != nil:
		return failGrant(fmt.Sprintf("cannot read the stored grant: %v", err), "run relayd doctor as root or as relayd's user")
	}
	tmp, err := os.MkdirTemp("", "relayd-doctor-")
	if err != nil {
		return failGrant(err.Error(), "")
	}
	defer os.RemoveAll(tmp)
	copyStore := &auth.Store{Dir: tmp, Keys: d.store.Keys} // no refresh token in clear in /tmp either
	if g != nil {
		if err := copyStore.Save(a.Name, g); err != nil {
			return failGrant(err.Error(), "")
		}
	}
	src, err := auth.NewSource(auth.SourceOptions{Account: a, Store: copyStore, Logger: quiet})
	if err != nil {
		return failGrant(err.Error(), "check the account's files (see the file checks above)")
	}
	acct, err := auth.NewAccount(a, src)
	if err != nil {
		return failGrant(err.Error(), "check the account's files (see the file checks above)")
	}
	rs := doctor.Credentials(ctx, acct, d.opts)
	if g != nil {
		if ng, err := copyStore.Load(a.Name); err == nil && ng.RefreshToken != g.RefreshToken {
			d.mu.Lock()
			d.rotated = append(d.rotated, rotatedGrant{name: a.Name, oldToken: g.RefreshToken, grant: ng})
			d.mu.Unlock()
		}
	}
	return rs
}

var errGrantChanged = errors.New("the stored grant changed while doctor ran")

// storeRotated stores the grants whose refresh token the provider rotated
// during the checks (the old one may be dead already), as the state
// directory's owner, unless another grant was stored meanwhile (relayd
// authorize). It returns what went wrong.
func (d *doctorRun) storeRotated(ctx context.Context) []doctor.Result {
	if len(d.rotated) == 0 {
		return nil
	}
	if err := dropToStateOwner(d.cfg.StateDir); err != nil {
		return []doctor.Result{{Check: "grant.store", Detail: err.Error(), Fix: "run relayd doctor as root or as relayd's user"}}
	}
	store := d.store
	var rs []doctor.Result
	for _, rg := range d.rotated {
		err := store.Update(rg.name, func(cur *auth.Grant) (*auth.Grant, error) {
			if cur == nil || cur.RefreshToken != rg.oldToken {
				return nil, errGrantChanged
			}
			return rg.grant, nil
		})
		switch {
		case errors.Is(err, errGrantChanged):
			rs = append(rs, doctor.Result{Account: rg.name, Check: "grant.store", OK: true, Warn: true,
				Detail: "another grant was stored while doctor ran (relayd authorize?): doctor left it, and the refresh token it rotated, alone",
				Fix:    fmt.Sprintf("run 'relayd doctor %s' again", rg.name)})
		case err != nil:
			rs = append(rs, doctor.Result{Account: rg.name, Check: "grant.store",
				Detail: fmt.Sprintf("the provider rotated the refresh token, but it could not be stored: %v", err),
				Fix:    fmt.Sprintf("if relayd then reports the grant dead, run 'relayd authorize %s'", rg.name)})
		}
	}
	return rs
}

// insertAfter puts r after the last result of account acct (or at the
// end).
func insertAfter(rs []doctor.Result, acct string, r doctor.Result) []doctor.Result {
	at := len(rs)
	for i := len(rs) - 1; i >= 0; i-- {
		if rs[i].Account == acct {
			at = i + 1
			break
		}
	}
	rs = append(rs, doctor.Result{})
	copy(rs[at+1:], rs[at:])
	rs[at] = r
	return rs
}
