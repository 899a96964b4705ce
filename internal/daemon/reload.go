package daemon

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"golang.org/x/sys/unix"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/tlscert"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

// Reload reads the configuration file again and applies what changed,
// without dropping anyone: accounts added, removed (their open IMAP
// sessions end with a BYE; their queued mail stays on disk, held) or edited
// (open sessions go on; new logins use the new settings), listen addresses
// (new ones open before old ones close), the log level, admin_group, the
// queue's schedule and [health]. The new file is parsed and checked completely
// first: on any error nothing changes and the error, naming its key, is
// returned. state_dir and status_socket need a restart.
//
// systemd is told RELOADING=1 (with MONOTONIC_USEC) before and READY=1
// after. Safe from any goroutine; one reload runs at a time.
func (d *Daemon) Reload() error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	sddaemon.SdNotify(false, fmt.Sprintf("%s\nMONOTONIC_USEC=%d", sddaemon.SdNotifyReloading, monotonicUsec()))
	defer sddaemon.SdNotify(false, sddaemon.SdNotifyReady)
	start := time.Now()
	err := d.reload()
	if err != nil {
		d.log.Error("configuration not reloaded; the old one stays in force", "file", d.opts.ConfigPath, "err", err)
		return err
	}
	d.log.Info("configuration reloaded", "file", d.opts.ConfigPath, "took", time.Since(start).Round(time.Microsecond))
	return nil
}

func (d *Daemon) reload() error {
	if d.opts.ConfigPath == "" {
		return errors.New("this relayd has no configuration file to reload")
	}
	cfg, err := config.Load(d.opts.ConfigPath)
	if err != nil {
		return err
	}
	if errs := cfg.CheckFiles(); len(errs) > 0 {
		return errors.Join(errs...)
	}
	old := d.config()
	if cfg.StateDir != old.StateDir {
		return fmt.Errorf("state_dir: changed from %s to %s; that needs a restart (systemctl restart relayd)", old.StateDir, cfg.StateDir)
	}
	if cfg.KeyFile != old.KeyFile {
		return fmt.Errorf("key_file: changed from %s to %s; that needs a restart (systemctl restart relayd); to change the key itself, run relayd rotate-key", old.KeyFile, cfg.KeyFile)
	}
	if cfg.StatusSocket != old.StatusSocket {
		return fmt.Errorf("status_socket: changed from %s to %s; that needs a restart (systemctl restart relayd)", old.StatusSocket, cfg.StatusSocket)
	}

	adminGID, err := config.LookupGroup(cfg.AdminGroup)
	if err != nil {
		return err
	}

	// Build everything that can fail before anything changes.
	webPair, err := d.readWebCert(cfg)
	if err != nil {
		return err
	}
	oldAccounts := d.accounts.Map()
	accounts, err := d.buildAccounts(cfg, oldAccounts)
	if err != nil {
		return err
	}
	var added, edited, removed []string
	for name, acct := range accounts {
		switch prev := oldAccounts[name]; {
		case prev == nil:
			added = append(added, name)
		case prev != acct:
			edited = append(edited, name)
		}
	}
	for name := range oldAccounts {
		if accounts[name] == nil {
			removed = append(removed, name)
		}
	}
	d.mu.Lock()
	newIMAP, err := openNew(d.imapLns, cfg.IMAP.Listen, d.opts.IMAPListeners != nil, "imap")
	if err != nil {
		d.mu.Unlock()
		return err
	}
	pairs, err := readCerts(cfg)
	if err != nil {
		d.mu.Unlock()
		for _, ln := range newIMAP {
			ln.Close()
		}
		return err
	}
	var opened [][]net.Listener
	for _, o := range []struct {
		have      []net.Listener
		want      []string
		activated bool
		key       string
	}{
		{d.smtpLns, cfg.SMTP.Listen, d.opts.SMTPListeners != nil, "smtp"},
		{d.pop3Lns, cfg.POP3.Listen, d.opts.POP3Listeners != nil, "pop3"},
		{d.imapTLSLns, cfg.IMAP.ListenTLS, d.opts.IMAPTLSListeners != nil, "imap.listen_tls"},
		{d.smtpTLSLns, cfg.SMTP.ListenTLS, d.opts.SMTPTLSListeners != nil, "smtp.listen_tls"},
		{d.pop3TLSLns, cfg.POP3.ListenTLS, d.opts.POP3TLSListeners != nil, "pop3.listen_tls"},
	} {
		lns, err := openNew(o.have, o.want, o.activated, o.key)
		if err != nil {
			d.mu.Unlock()
			for _, ln := range newIMAP {
				ln.Close()
			}
			for _, l := range opened {
				for _, ln := range l {
					ln.Close()
				}
			}
			return err
		}
		opened = append(opened, lns)
	}
	newSMTP, newPOP3, newIMAPTLS, newSMTPTLS, newPOP3TLS := opened[0], opened[1], opened[2], opened[3], opened[4]

	// From here on nothing fails.
	d.cfg.Store(cfg)
	d.setCerts(old, cfg, pairs) // before new listeners are served
	d.reloadWeb(old, cfg, webPair)
	d.accounts.Swap(accounts)
	users := localauth.NewUsers(cfg.Accounts)
	users.Guard = d.guard
	d.imap.SetUsers(users)
	d.pop3.SetUsers(users)
	d.smtp.SetUsers(users)
	d.guard.Set(cfg.Login.MaxFailures, cfg.Login.FailureWindow, cfg.Login.Lockout)
	d.status.SetAdminGID(adminGID)
	if d.web != nil && cfg.AdminGroup != old.AdminGroup {
		d.web.EndSessions("admin_group changed")
	}
	d.imap.SetLimits(imapLimits(cfg))
	d.pop3.SetLimits(pop3Limits(cfg))
	d.smtp.SetLimits(smtpLimits(cfg))
	for name, acct := range accounts {
		if oldAccounts[name] != acct {
			if cancel := d.runs[name]; cancel != nil {
				cancel()
			}
			d.startRun(acct)
		}
	}
	for _, name := range removed {
		if cancel := d.runs[name]; cancel != nil {
			cancel()
			delete(d.runs, name)
		}
	}
	for _, ln := range newIMAP {
		d.serveIMAP(ln)
	}
	for _, ln := range newSMTP {
		d.serveSMTP(ln)
	}
	for _, ln := range newPOP3 {
		d.servePOP3(ln)
	}
	for _, ln := range newIMAPTLS {
		d.serveIMAPTLS(ln)
	}
	for _, ln := range newSMTPTLS {
		d.serveSMTPTLS(ln)
	}
	for _, ln := range newPOP3TLS {
		d.servePOP3TLS(ln)
	}
	d.imapLns = closeGone(append(d.imapLns, newIMAP...), cfg.IMAP.Listen, d.opts.IMAPListeners != nil)
	d.smtpLns = closeGone(append(d.smtpLns, newSMTP...), cfg.SMTP.Listen, d.opts.SMTPListeners != nil)
	d.pop3Lns = closeGone(append(d.pop3Lns, newPOP3...), cfg.POP3.Listen, d.opts.POP3Listeners != nil)
	d.imapTLSLns = closeGone(append(d.imapTLSLns, newIMAPTLS...), cfg.IMAP.ListenTLS, d.opts.IMAPTLSListeners != nil)
	d.smtpTLSLns = closeGone(append(d.smtpTLSLns, newSMTPTLS...), cfg.SMTP.ListenTLS, d.opts.SMTPTLSListeners != nil)
	d.pop3TLSLns = closeGone(append(d.pop3TLSLns, newPOP3TLS...), cfg.POP3.ListenTLS, d.opts.POP3TLSListeners != nil)
	d.mu.Unlock()

	if d.opts.LogLevel != nil {
		d.opts.LogLevel.Set(cfg.LogLevel)
	}
	if cfg.AdminGroup != old.AdminGroup {
		d.log.Info("admin_group changed: status socket calls from now on are judged by the new group", "was", old.AdminGroup, "now", cfg.AdminGroup)
	}
	d.queue.SetSchedule(cfg.Queue.RetryMin, cfg.Queue.RetryMax, cfg.Queue.Lifetime)
	for _, name := range added {
		d.queue.AccountAdded(name)
	}
	for _, name := range removed {
		n := d.imap.EndAccount(name, "mailbox "+strconv.Quote(name)+" was removed from relayd's configuration")
		np := d.pop3.EndAccount(name)
		d.queue.AccountRemoved(name)
		st := d.queue.Stats(name)
		d.log.Warn("account removed from the configuration: its sessions ended, its queued mail stays on disk, held; add it back to send it, or delete it with 'relayd queue delete'",
			"account", name, "imap_sessions_ended", n, "pop3_sessions_ended", np, "queued", st.Queued+st.Held)
	}
	for _, a := range accounts {
		a.Health.Evaluate()
	}
	d.syncWarm() // drains the pools of edited and removed accounts
	slices.Sort(added)
	slices.Sort(edited)
	slices.Sort(removed)
	d.log.Info("accounts after the reload", "added", added, "edited", edited, "removed", removed, "accounts", len(accounts))
	return nil
}

// setCerts installs the certificates read for cfg: connections that shake
// hands from now on get them, open sessions keep theirs.
func (d *Daemon) setCerts(old, cfg *config.Config, pairs map[string]*tlscert.Pair) {
	oldHad := map[string]bool{}
	for _, l := range old.Listeners() {
		oldHad[l.Table] = l.HasCert()
	}
	for _, l := range cfg.Listeners() {
		p := pairs[l.Table]
		d.certs[l.Table].Set(p)
		switch {
		case p != nil:
			d.log.Info("listener certificate loaded", "protocol", l.Table, "file", p.CertFile, "subject", p.Subject, "not_after", p.NotAfter)
			if l.Table == "smtp" && !oldHad[l.Table] && len(d.smtpLns) > 0 {
				d.log.Warn("smtp.tls_cert added: implicit-TLS and newly added SMTP listeners use it; SMTP listeners already open offer STARTTLS only after a restart")
			}
		case oldHad[l.Table]:
			d.log.Warn(l.Table+".tls_cert removed: new connections get no STARTTLS; SMTP listeners already open keep offering it, with the last certificate, until a restart", "protocol", l.Table)
		}
	}
}

// healthSame reports whether [health] settings that accounts are built
// with are unchanged.
func healthSame(a, b *config.Config) bool {
	return a.Health.RetryBudget == b.Health.RetryBudget && a.Health.RetryWindow == b.Health.RetryWindow &&
		a.Health.WarnDays == b.Health.WarnDays
}

func healthOf(a *registry.Account) *health.Account {
	if a == nil {
		return nil
	}
	return a.Health
}

// openNew opens the addresses of want that no listener in have is bound
// to. Socket-activated listeners are systemd's: none are opened.
func openNew(have []net.Listener, want []string, activated bool, proto string) ([]net.Listener, error) {
	if activated {
		return nil, nil
	}
	var opened []net.Listener
	for _, addr := range want {
		if slices.ContainsFunc(have, func(ln net.Listener) bool { return sameAddr(ln, addr) }) {
			continue
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range opened {
				l.Close()
			}
			return nil, fmt.Errorf("%s.listen %s: %w", proto, addr, err)
		}
		opened = append(opened, ln)
	}
	return opened, nil
}

// closeGone closes the listeners no address of want names, and returns
// the rest.
func closeGone(lns []net.Listener, want []string, activated bool) []net.Listener {
	if activated {
		return lns
	}
	var keep []net.Listener
	for _, ln := range lns {
		if slices.ContainsFunc(want, func(addr string) bool { return sameAddr(ln, addr) }) {
			keep = append(keep, ln)
		} else {
			ln.Close()
		}
	}
	return keep
}

// sameAddr reports whether ln is bound to addr (port 0 matches what it
// got, "localhost" 127.0.0.1).
func sameAddr(ln net.Listener, addr string) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	lh, lp, _ := net.SplitHostPort(ln.Addr().String())
	if host == "localhost" {
		host = "127.0.0.1"
	}
	return host == lh && (port == lp || port == "0")
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, as systemd wants
// beside RELOADING=1.
func monotonicUsec() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano() / 1000
}
