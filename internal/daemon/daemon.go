// Package daemon wires relayd together from a Config: the running accounts
// (package registry, built by buildAccounts, which reload shares), the queue
// with its SMTP transport (openQueue), the local logins (package
// localauth), the downstream listeners (package proxy, reporting to
// status.Metrics as their proxy.Recorder) and the status socket (listen);
// it runs them until told to stop, reloads the configuration and runs the
// on_state_change hook. cmd/relayd's serve and demo commands are thin
// layers over it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/tlscert"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/proxy"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/registry"
	"github.com/relayd/relayd/status"
	"github.com/relayd/relayd/transport"
	graphtransport "github.com/relayd/relayd/transport/graph"
	smtptransport "github.com/relayd/relayd/transport/smtp"
	"github.com/relayd/relayd/web"
)

// Version and Commit are relayd's version and source revision, set at
// build time (-ldflags "-X ...daemon.Version=... -X ...daemon.Commit=...").
var (
	Version = "dev"
	Commit  = ""
)

// Options tune a Daemon beyond its Config; tests and the demo use them.
type Options struct {
	Logger *slog.Logger
	// HTTPClient talks to token endpoints. Default: 30s timeout.
	HTTPClient *http.Client
	// Dialer dials upstream servers.
	Dialer func(ctx context.Context, network, addr string) (net.Conn, error)
	// AuthFailureDelay: see proxy.IMAPOptions.
	AuthFailureDelay time.Duration
	// IMAPListeners and SMTPListeners, when set, are used instead of
	// listening on the configured addresses (socket activation, tests);
	// so are IMAPTLSListeners and SMTPTLSListeners instead of listen_tls.
	IMAPListeners, SMTPListeners       []net.Listener
	IMAPTLSListeners, SMTPTLSListeners []net.Listener
	// POP3Listeners and POP3TLSListeners, when set, are used instead of
	// [pop3] listen and listen_tls.
	POP3Listeners, POP3TLSListeners []net.Listener
	// OnQueueEvent: see queue.Options.OnEvent.
	OnQueueEvent func(queue.Event)
	// OnHook, when set, is called after each run of on_state_change with
	// its error (nil: it exited 0), for tests.
	OnHook func(health.Transition, error)
	// ConfigPath is the file Reload reads; empty: no reload.
	ConfigPath string
	// LogLevel, when set, is the logger's level, which a reload changes.
	LogLevel *slog.LevelVar
	// StatusLimits bound the connections of the status socket and of
	// [metrics] listen; zero fields take status.Limits' defaults.
	StatusLimits status.Limits
	// WebUpdateInterval is how often the web console's live updates look
	// for a change; zero: web.Options' default.
	WebUpdateInterval time.Duration
}

// Daemon is a running relayd.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	started time.Time
	store   *auth.Store
	// keyWarning is what is wrong with the token store's key, for
	// status (keys.go); guarded by keyMu.
	keyMu      sync.Mutex
	keyWarning string

	// cfg is replaced whole by a reload; readers load it. accounts is
	// the registry of running accounts, which a reload swaps.
	cfg      atomic.Pointer[config.Config]
	accounts *registry.Registry

	imap   *proxy.IMAPServer
	pop3   *proxy.POP3Server
	smtp   *proxy.SMTPServer
	queue  *queue.Queue
	status *status.Server

	mu         sync.Mutex // guards the listeners and runs
	imapLns    []net.Listener
	pop3Lns    []net.Listener
	smtpLns    []net.Listener
	imapTLSLns []net.Listener // implicit TLS (listen_tls)
	pop3TLSLns []net.Listener
	smtpTLSLns []net.Listener
	// certs hold each protocol's listener certificate, which a reload
	// replaces.
	certs      map[string]*tlscert.Holder
	runs       map[string]context.CancelFunc // each account's token keep-alive
	statusLn   net.Listener
	sendmailLn net.Listener // [sendmail] socket
	hostname   string
	metrics    *status.Metrics
	metricLn   net.Listener // [metrics] listen, or nil
	metricSrv  *status.MetricsServer
	webLn      net.Listener // [web] listen, or nil
	web        *web.Server
	webCert    *tlscert.Holder // the console's certificate, under TLS
	wg         sync.WaitGroup
	ctx        context.Context    // of background work; set by Start
	cancel     context.CancelFunc // stops background work
	hooks      hookLocks          // on_state_change runs one at a time per account
	guard      *localauth.Guard   // local logins' brute-force defence, kept across reloads
	statusDone chan struct{}      // closed when the status socket stopped
	reloadMu   sync.Mutex         // one reload at a time
}

// config is the configuration in force.
func (d *Daemon) config() *config.Config { return d.cfg.Load() }

// New builds a daemon from cfg and opens its listeners, so that once New
// returns, clients can connect.
func New(cfg *config.Config, opts Options) (*Daemon, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	d := &Daemon{opts: opts, log: opts.Logger, started: time.Now(), runs: map[string]context.CancelFunc{}}
	d.cfg.Store(cfg)
	d.metrics = status.NewMetrics(d, Version, Commit)
	d.store = d.openStore(cfg)
	accounts, err := d.buildAccounts(cfg, nil)
	if err != nil {
		return nil, err
	}
	d.accounts = registry.New(accounts)
	hostname, _ := os.Hostname()
	d.hostname = hostname
	if d.queue, err = d.openQueue(cfg, hostname); err != nil {
		return nil, err
	}
	built := false
	defer func() {
		if !built {
			d.queue.Close()
		}
	}()
	if d.certs, err = loadCerts(cfg); err != nil {
		return nil, err
	}
	d.guard = &localauth.Guard{Failures: cfg.Login.MaxFailures, Window: cfg.Login.FailureWindow, CoolOff: cfg.Login.Lockout,
		PerAddress: true, Logger: d.log}
	users := localauth.NewUsers(cfg.Accounts)
	users.Guard = d.guard
	d.imap = proxy.NewIMAPServer(proxy.IMAPOptions{
		Users:            users,
		Accounts:         d.accounts,
		Logger:           opts.Logger,
		Dialer:           opts.Dialer,
		PreauthTimeout:   cfg.IMAP.PreauthTimeout,
		IdleTimeout:      cfg.IMAP.IdleTimeout,
		WriteTimeout:     cfg.IMAP.WriteTimeout,
		Limits:           imapLimits(cfg),
		Recorder:         d.metrics,
		AuthFailureDelay: opts.AuthFailureDelay,
		TLS:              d.certs["imap"].Config,
	})
	d.pop3 = proxy.NewPOP3Server(proxy.POP3Options{
		Users:            users,
		Accounts:         d.accounts,
		Logger:           opts.Logger,
		Dialer:           opts.Dialer,
		PreauthTimeout:   cfg.POP3.PreauthTimeout,
		IdleTimeout:      cfg.POP3.IdleTimeout,
		WriteTimeout:     cfg.POP3.WriteTimeout,
		Limits:           pop3Limits(cfg),
		Recorder:         d.metrics,
		AuthFailureDelay: opts.AuthFailureDelay,
		TLS:              d.certs["pop3"].Config,
	})
	d.smtp = proxy.NewSMTPServer(proxy.SMTPOptions{
		Users: users, Queue: d.queue, Logger: opts.Logger, Hostname: hostname,
		MaxMessageSize: cfg.SMTP.MaxMessageSize, AuthFailureDelay: opts.AuthFailureDelay,
		Timeout: cfg.SMTP.Timeout, Limits: smtpLimits(cfg), Recorder: d.metrics, Accounts: d.accounts,
		TLS: d.certs["smtp"].Config,
	})
	d.status = status.NewServer(d, opts.Logger, d.metrics)
	d.status.SetLimits(opts.StatusLimits)
	if err := d.status.SetAdminGroup(cfg.AdminGroup); err != nil {
		return nil, err
	}

	if err := d.listen(cfg); err != nil {
		return nil, err
	}
	if err := d.listenWeb(cfg); err != nil {
		d.closeListeners()
		return nil, err
	}
	built = true
	return d, nil
}

// openQueue opens the spool, with the SMTP and Graph transports, and counts each
// delivery attempt's outcome in the metrics.
func (d *Daemon) openQueue(cfg *config.Config, hostname string) (*queue.Queue, error) {
	onEvent := d.opts.OnQueueEvent
	return queue.Open(queue.Options{
		Dir: filepath.Join(cfg.StateDir, "queue"), Logger: d.log,
		Transport: transport.ByAccount{
			SMTP:  smtptransport.New(smtptransport.Options{Hostname: hostname, Dialer: d.opts.Dialer}),
			Graph: graphtransport.New(graphtransport.Options{Logger: d.log}),
		},
		Accounts: d.accounts.Auth,
		Hostname: hostname, RetryMin: cfg.Queue.RetryMin, RetryMax: cfg.Queue.RetryMax, Lifetime: cfg.Queue.Lifetime,
		OnEvent: func(e queue.Event) {
			if e.ID != "" && (e.Kind == queue.EventDelivered || e.Kind == queue.EventDeferred || e.Kind == queue.EventFailed) {
				d.metrics.Delivery(e.Account, string(e.Kind))
			}
			if e.Kind == queue.EventNotQueued {
				d.metrics.NotQueued(e.Account)
			}
			if onEvent != nil {
				onEvent(e)
			}
		},
		// A relayd queue command may be editing the spool as the
		// daemon starts; such commands take well under a second.
		LockWait: 10 * time.Second,
	})
}

// listen opens the status socket, [metrics] listen and the mail listeners
// (those socket activation did not hand over).
func (d *Daemon) listen(cfg *config.Config) (err error) {
	defer func() {
		if err != nil {
			d.closeListeners()
		}
	}()
	if d.statusLn, err = status.Listen(cfg.StatusSocket); err != nil {
		return err
	}
	if d.sendmailLn, err = status.ListenSendmail(cfg.SendmailSocket()); err != nil {
		return err
	}
	if cfg.Metrics.Listen != "" {
		if d.metricLn, err = net.Listen("tcp", cfg.Metrics.Listen); err != nil {
			return fmt.Errorf("metrics.listen %s: %w", cfg.Metrics.Listen, err)
		}
	}
	d.imapLns, d.smtpLns = d.opts.IMAPListeners, d.opts.SMTPListeners
	if d.imapLns == nil {
		if d.imapLns, err = openNew(nil, cfg.IMAP.Listen, false, "imap"); err != nil {
			return err
		}
	}
	if d.smtpLns == nil {
		if d.smtpLns, err = openNew(nil, cfg.SMTP.Listen, false, "smtp"); err != nil {
			return err
		}
	}
	d.pop3Lns = d.opts.POP3Listeners
	if d.pop3Lns == nil {
		if d.pop3Lns, err = openNew(nil, cfg.POP3.Listen, false, "pop3"); err != nil {
			return err
		}
	}
	d.imapTLSLns, d.smtpTLSLns = d.opts.IMAPTLSListeners, d.opts.SMTPTLSListeners
	if d.imapTLSLns == nil {
		if d.imapTLSLns, err = openNew(nil, cfg.IMAP.ListenTLS, false, "imap.listen_tls"); err != nil {
			return err
		}
	}
	if d.smtpTLSLns == nil {
		if d.smtpTLSLns, err = openNew(nil, cfg.SMTP.ListenTLS, false, "smtp.listen_tls"); err != nil {
			return err
		}
	}
	d.pop3TLSLns = d.opts.POP3TLSListeners
	if d.pop3TLSLns == nil {
		if d.pop3TLSLns, err = openNew(nil, cfg.POP3.ListenTLS, false, "pop3.listen_tls"); err != nil {
			return err
		}
	}
	return nil
}

// loadCerts loads the listener certificate of each protocol with
// tls_cert, as the service user.
func loadCerts(cfg *config.Config) (map[string]*tlscert.Holder, error) {
	pairs, err := readCerts(cfg)
	if err != nil {
		return nil, err
	}
	certs := map[string]*tlscert.Holder{}
	for _, l := range cfg.Listeners() {
		certs[l.Table] = tlscert.NewHolder(pairs[l.Table])
	}
	return certs, nil
}

// readCerts reads the certificate and key files of cfg.
func readCerts(cfg *config.Config) (map[string]*tlscert.Pair, error) {
	pairs := map[string]*tlscert.Pair{}
	for _, l := range cfg.Listeners() {
		if !l.HasCert() {
			continue
		}
		p, err := tlscert.Load(l.Table, l.CertFile, l.KeyFile)
		if err != nil {
			return nil, err
		}
		pairs[l.Table] = p
	}
	return pairs, nil
}

// buildAccounts builds the running accounts of cfg. An account in keep
// whose configuration is unchanged stays as it is; an edited one keeps its
// condition and history.
func (d *Daemon) buildAccounts(cfg *config.Config, keep map[string]*registry.Account) (map[string]*registry.Account, error) {
	accounts := map[string]*registry.Account{}
	for _, a := range cfg.Accounts {
		prev := keep[a.Name]
		if prev != nil && reflect.DeepEqual(*prev.Config, *a) && healthSame(d.config(), cfg) {
			accounts[a.Name] = prev
			continue
		}
		acct, err := d.buildAccount(cfg, a, healthOf(prev))
		if err != nil {
			return nil, err
		}
		if prev != nil {
			acct.KeepSessions(prev)
			if prev.Config.Transport != a.Transport {
				// The way out changed (535 5.7.139's advice: transport =
				// "graph"): what the old one said no longer holds the mail.
				old := health.SourceSMTP
				if prev.Config.Graph() {
					old = health.SourceGraph
				}
				acct.Health.Succeed(old)
			}
		}
		accounts[a.Name] = acct
	}
	return accounts, nil
}

// buildAccount makes the running account of a (registry.Build): its
// condition, wired to the hook and the metrics, and its token source. h,
// when not nil, is the condition it keeps (an account edited by a reload).
func (d *Daemon) buildAccount(cfg *config.Config, a *config.Account, h *health.Account) (*registry.Account, error) {
	return registry.Build(cfg, a, h, registry.BuildOptions{
		Store: d.store, HTTPClient: d.opts.HTTPClient, Logger: d.opts.Logger,
		OnTransition: d.runHook,
		OnReport:     d.metrics.UpstreamAuth,
	})
}

// startRun starts the token keep-alive of acct. d.mu is held.
func (d *Daemon) startRun(acct *registry.Account) {
	if acct.Tokens == nil {
		return
	}
	ctx, cancel := context.WithCancel(d.ctx)
	d.runs[acct.Config.Name] = cancel
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.keepRunning(ctx, acct.Health, "keeping the grant alive", acct.Tokens.Run)
	}()
}

func (d *Daemon) closeListeners() {
	if d.statusLn != nil {
		d.statusLn.Close()
	}
	if d.sendmailLn != nil {
		d.sendmailLn.Close()
	}
	if d.metricLn != nil {
		d.metricLn.Close()
	}
	if d.webLn != nil {
		d.webLn.Close()
	}
	for _, lns := range [][]net.Listener{d.imapLns, d.pop3Lns, d.smtpLns, d.imapTLSLns, d.pop3TLSLns, d.smtpTLSLns} {
		for _, ln := range lns {
			ln.Close()
		}
	}
}

// SMTPAddrs returns the addresses the SMTP listeners are bound to.
func (d *Daemon) SMTPAddrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var addrs []string
	for _, ln := range d.smtpLns {
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// POP3Addrs returns the addresses the POP3 listeners are bound to.
func (d *Daemon) POP3Addrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return addrsOf(d.pop3Lns)
}

// IMAPTLSAddrs and SMTPTLSAddrs return the addresses the implicit-TLS
// listeners are bound to.
func (d *Daemon) IMAPTLSAddrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return addrsOf(d.imapTLSLns)
}

// POP3TLSAddrs: see IMAPTLSAddrs.
func (d *Daemon) POP3TLSAddrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return addrsOf(d.pop3TLSLns)
}

// SMTPTLSAddrs: see IMAPTLSAddrs.
func (d *Daemon) SMTPTLSAddrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return addrsOf(d.smtpTLSLns)
}

func addrsOf(lns []net.Listener) []string {
	var addrs []string
	for _, ln := range lns {
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// Queue returns the outbound queue.
func (d *Daemon) Queue() *queue.Queue { return d.queue }

// IMAPAddrs returns the addresses the IMAP listeners are bound to.
func (d *Daemon) IMAPAddrs() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	var addrs []string
	for _, ln := range d.imapLns {
		addrs = append(addrs, ln.Addr().String())
	}
	return addrs
}

// Start serves in the background.
func (d *Daemon) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel = cancel
	d.ctx = ctx
	d.mu.Lock()
	for _, acct := range d.accounts.Map() {
		d.startRun(acct)
	}
	d.mu.Unlock()
	d.mu.Lock()
	for _, ln := range d.imapLns {
		d.serveIMAP(ln)
	}
	for _, ln := range d.smtpLns {
		d.serveSMTP(ln)
	}
	for _, ln := range d.pop3Lns {
		d.servePOP3(ln)
	}
	for _, ln := range d.imapTLSLns {
		d.serveIMAPTLS(ln)
	}
	for _, ln := range d.pop3TLSLns {
		d.servePOP3TLS(ln)
	}
	for _, ln := range d.smtpTLSLns {
		d.serveSMTPTLS(ln)
	}
	d.mu.Unlock()
	d.syncWarm()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.keepRunning(ctx, nil, "running the queue", d.queue.Run)
	}()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.keepRunning(ctx, nil, "re-deciding account states", d.evaluate)
	}()
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		d.keepRunning(ctx, nil, "picking up the maildrop", d.pickup)
	}()
	d.log.Debug("garbage collection target", "gogc", tuneGC())
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		trimMemory(ctx, trimEvery)
	}()
	if d.metricLn != nil {
		d.metricSrv = status.NewMetricsServer(d.metrics, d.opts.StatusLimits, d.log)
		go d.metricSrv.Serve(d.metricLn)
	}
	if d.web != nil {
		go func() {
			if err := d.web.Serve(d.webLn); err != nil && err != web.ErrServerClosed {
				d.log.Error("web console failed", "err", err)
			}
		}()
	}
	// Not in d.wg: the status socket answers until the end of a
	// shutdown, after everything else stopped.
	d.statusDone = make(chan struct{})
	go func() {
		defer close(d.statusDone)
		if err := d.status.Serve(d.statusLn); err != nil {
			d.log.Error("status socket failed", "err", err)
		}
	}()
	go func() {
		if err := d.status.ServeSendmail(d.sendmailLn); err != nil {
			d.log.Error("sendmail socket failed", "err", err)
		}
	}()
	d.log.Info("relayd started", "version", Version, "imap", d.IMAPAddrs(), "pop3", d.POP3Addrs(), "smtp", d.SMTPAddrs(),
		"imap_tls", addrsOf(d.imapTLSLns), "pop3_tls", addrsOf(d.pop3TLSLns), "smtp_tls", addrsOf(d.smtpTLSLns), "status_socket", d.config().StatusSocket,
		"accounts", len(d.accounts.Map()))
}

// syncWarm starts (at start) or updates (after a reload) the warm
// upstream connections of the accounts, for the protocols relayd
// listens for.
func (d *Daemon) syncWarm() {
	d.mu.Lock()
	imap, pop3 := len(d.imapLns)+len(d.imapTLSLns) > 0, len(d.pop3Lns)+len(d.pop3TLSLns) > 0
	d.mu.Unlock()
	if imap {
		d.imap.SyncWarm()
	}
	if pop3 {
		d.pop3.SyncWarm()
	}
}

// evaluate lets each account re-decide its state as time passes (a grant
// coming within warn_days of its predicted end), every minute.
func (d *Daemon) evaluate(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			for _, a := range d.accounts.Map() {
				a.Health.Evaluate()
			}
		}
	}
}

// keepRunning runs fn until ctx ends, starting it again a second after a
// panic, which is logged and counted.
func (d *Daemon) keepRunning(ctx context.Context, h *health.Account, what string, fn func(context.Context)) {
	for {
		panicked := func() (panicked bool) {
			defer func() {
				if v := recover(); v != nil {
					health.Recovered(d.log, h, what, v)
					panicked = true
				}
			}()
			fn(ctx)
			return false
		}()
		if !panicked {
			return
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// serveIMAP serves ln in the background.
func (d *Daemon) serveIMAP(ln net.Listener) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.imap.Serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			d.log.Error("IMAP listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// servePOP3 serves ln in the background.
func (d *Daemon) servePOP3(ln net.Listener) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.pop3.Serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			d.log.Error("POP3 listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// serveIMAPTLS serves ln, an implicit-TLS listener, in the background.
func (d *Daemon) serveIMAPTLS(ln net.Listener) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.imap.ServeTLS(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			d.log.Error("IMAP listener failed", "addr", ln.Addr().String(), "tls", true, "err", err)
		}
	}()
}

// servePOP3TLS serves ln, an implicit-TLS listener, in the background.
func (d *Daemon) servePOP3TLS(ln net.Listener) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.pop3.ServeTLS(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) {
			d.log.Error("POP3 listener failed", "addr", ln.Addr().String(), "tls", true, "err", err)
		}
	}()
}

// serveSMTPTLS serves ln, an implicit-TLS listener, in the background.
func (d *Daemon) serveSMTPTLS(ln net.Listener) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.smtp.ServeTLS(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			d.log.Error("SMTP listener failed", "addr", ln.Addr().String(), "tls", true, "err", err)
		}
	}()
}

// serveSMTP serves ln in the background.
func (d *Daemon) serveSMTP(ln net.Listener) {
	d.wg.Add(1)
	go func() {
		defer d.wg.Done()
		if err := d.smtp.Serve(ln); err != nil && !errors.Is(err, proxy.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			d.log.Error("SMTP listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
}

// Shutdown stops accepting, lets established sessions end until ctx is done,
// then closes everything.
//
// Every listener closes at the same moment; IMAP clients that have not
// logged in get a BYE (POP3 ones -ERR [SYS/TEMP]), SMTP clients a 421 between commands (after the 250
// of a message they are sending); established IMAP sessions and deliveries
// in progress may finish until ctx ends, when the rest is closed. Queued
// mail stays on disk. The status socket answers until the end.
func (d *Daemon) Shutdown(ctx context.Context) error {
	start := time.Now()
	d.log.Info("shutting down: listeners closed; sessions and deliveries in progress may finish",
		"imap_sessions", d.imap.OpenSessions(), "pop3_sessions", d.pop3.OpenSessions(), "smtp_sessions", d.smtp.OpenSessions())
	if d.cancel != nil {
		d.cancel() // no new deliveries; those in progress finish
	}
	var wg sync.WaitGroup
	var imapErr, pop3Err, smtpErr error
	wg.Add(3)
	go func() { defer wg.Done(); imapErr = d.imap.Shutdown(ctx) }()
	go func() { defer wg.Done(); pop3Err = d.pop3.Shutdown(ctx) }()
	go func() { defer wg.Done(); smtpErr = d.smtp.Shutdown(ctx) }()
	wg.Wait()
	background := make(chan struct{})
	go func() { d.wg.Wait(); close(background) }()
	deliveriesDone := true
	select {
	case <-background:
	case <-ctx.Done():
		deliveriesDone = false
	}
	// Refreshes in flight store their rotated refresh tokens before
	// relayd exits (a refresh token spent and not stored kills the grant).
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	for _, a := range d.accounts.Map() {
		if a.Tokens != nil {
			a.Tokens.Wait(rctx)
		}
	}
	rcancel()
	sctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	d.status.Shutdown(sctx)
	if d.metricSrv != nil {
		d.metricSrv.Shutdown(sctx)
	}
	d.shutdownWeb(sctx)
	if d.statusDone != nil {
		<-d.statusDone
	}
	if deliveriesDone {
		d.queue.Close()
	}
	still := []any{"took", time.Since(start).Round(time.Millisecond)}
	if imapErr != nil {
		still = append(still, "imap_sessions_closed", "at the end of the grace period")
	}
	if pop3Err != nil {
		still = append(still, "pop3_sessions_closed", "at the end of the grace period")
	}
	if smtpErr != nil {
		still = append(still, "smtp_sessions_closed", "at the end of the grace period")
	}
	if !deliveriesDone {
		still = append(still, "deliveries", "unfinished: those messages stay queued and are sent again (at least once)")
	}
	d.log.Info("relayd stopped", still...)
	return errors.Join(imapErr, pop3Err, smtpErr)
}

// Alive checks that the daemon's core answers within ctx: every account's
// condition and the queue's scheduler take their locks. The systemd
// watchdog is fed only while it does.
func (d *Daemon) Alive(ctx context.Context) error {
	done := make(chan struct{})
	go func() {
		for _, a := range d.accounts.Map() {
			a.Health.State()
		}
		d.queue.Stats("")
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return errors.New("account states or the queue did not answer in time")
	}
}

// Status implements status.Backend.
func (d *Daemon) Status() *status.Status {
	st := &status.Status{Version: Version, Started: d.started, Panics: health.Panics(), LockedOut: d.guard.LockedOut()}
	accounts := d.accounts.Map()
	smtpSessions := d.smtp.SessionsByAccount()
	for _, a := range d.config().Accounts {
		acct := accounts[a.Name]
		if acct == nil {
			continue
		}
		sa := status.Account{
			Name: a.Name, Email: a.Email, Provider: a.Provider, Direction: string(a.Direction), Transport: a.Transport,
			Snapshot: acct.Health.Snapshot(), IMAPSessions: acct.IMAPSessions(), SMTPSessions: smtpSessions[a.Name],
			POP3Sessions: acct.POP3Sessions(),
		}
		if w, ok := d.imap.WarmStatus(a.Name); ok {
			sw := status.Warm(w)
			sa.WarmIMAP = &sw
		}
		if w, ok := d.pop3.WarmStatus(a.Name); ok {
			sw := status.Warm(w)
			sa.WarmPOP3 = &sw
		}
		sa.Token.State, sa.Token.Advice = sa.State, sa.Advice
		if acct.Tokens != nil {
			sa.Token.TokenStatus = acct.Tokens.Status()
		}
		qs := d.queue.Stats(a.Name)
		sa.Queue = &qs
		st.Accounts = append(st.Accounts, sa)
	}
	st.Banner = status.MakeBanner(st.Accounts)
	now := time.Now()
	for _, l := range d.config().Listeners() {
		if p := d.certs[l.Table].Current(); p != nil {
			st.Certificates = append(st.Certificates, status.Certificate{Protocol: l.Table, File: p.CertFile, Subject: p.Subject,
				NotAfter: p.NotAfter, ExpiresSoon: p.ExpiresSoon(now)})
		}
	}
	st.SetOrphans(d.queue.Orphans())
	st.SetSpoolFailing(d.queue.StoreFailing())
	st.Encryption = d.encryption()
	return st
}

// InstallGrant implements status.Backend.
func (d *Daemon) InstallGrant(name string, g *auth.Grant) error {
	acct := d.accounts.Get(name)
	if acct == nil {
		return fmt.Errorf("%w %q", status.ErrUnknownAccount, name)
	}
	if acct.Tokens == nil {
		return fmt.Errorf("account %q uses provider \"password\" and takes no OAuth grant: %w", name, auth.ErrGrantRefused)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := acct.Tokens.Adopt(ctx, g); err != nil {
		d.log.Warn("grant handed over by 'relayd authorize' refused; the current grant stays in force", "account", name, "err", err)
		return err
	}
	return nil
}

// imapLimits, pop3Limits and smtpLimits are the session limits cfg sets.
func imapLimits(cfg *config.Config) proxy.Limits {
	return proxy.Limits{Sessions: cfg.IMAP.MaxSessions, PerAddress: cfg.IMAP.MaxSessionsPerAddress, AllowFrom: cfg.IMAP.AllowFrom}
}

func pop3Limits(cfg *config.Config) proxy.Limits {
	return proxy.Limits{Sessions: cfg.POP3.MaxSessions, PerAddress: cfg.POP3.MaxSessionsPerAddress, AllowFrom: cfg.POP3.AllowFrom}
}

func smtpLimits(cfg *config.Config) proxy.Limits {
	return proxy.Limits{Sessions: cfg.SMTP.MaxSessions, PerAddress: cfg.SMTP.MaxSessionsPerAddress, AllowFrom: cfg.SMTP.AllowFrom}
}
