package daemon

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/tlscert"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/web"
)

// listenWeb opens [web] listen and builds the console on it, when set.
// Its certificate is read now and again at each reload (a renewed
// certificate is picked up by relayd reload); the address and the other
// [web] keys take effect at the next start.
func (d *Daemon) listenWeb(cfg *config.Config) error {
	if !cfg.Web.Enabled() {
		return nil
	}
	ln, err := net.Listen("tcp", cfg.Web.Listen)
	if err != nil {
		return fmt.Errorf("web.listen %s: %w", cfg.Web.Listen, err)
	}
	d.webLn = ln
	addr := cfg.Web.Listen
	if _, port, _ := net.SplitHostPort(addr); port == "0" {
		addr = ln.Addr().String() // tests: the port the kernel chose
	}
	o := web.Options{Backend: d, Logger: d.log.With("component", "web"), Addr: addr,
		RedirectURI: cfg.Web.RedirectURI, SessionIdle: cfg.Web.SessionIdle, SSHTarget: sshTarget(),
		UpdateInterval: d.opts.WebUpdateInterval}
	if cfg.Web.TLS() {
		p, err := tlscert.Load("web", cfg.Web.CertFile, cfg.Web.KeyFile)
		if err != nil {
			return err
		}
		d.webCert = tlscert.NewHolder(p)
		o.TLS = d.webCert.Config()
	}
	d.web = web.New(o)
	d.status.SetConsole(d.web)
	return nil
}

// readWebCert reads the console's certificate again for a reload (nil:
// the console has no TLS).
func (d *Daemon) readWebCert(cfg *config.Config) (*tlscert.Pair, error) {
	if d.webCert == nil || !cfg.Web.TLS() {
		return nil, nil
	}
	return tlscert.Load("web", cfg.Web.CertFile, cfg.Web.KeyFile)
}

// reloadWeb presents the certificate readWebCert read to the next
// handshakes, and says which [web] changes wait for a restart.
func (d *Daemon) reloadWeb(old, cfg *config.Config, p *tlscert.Pair) {
	if old.Web != cfg.Web {
		d.log.Warn("web: [web] changed; the console keeps its address and settings until relayd restarts (systemctl restart relayd)",
			"listen", old.Web.Listen)
	}
	if p != nil {
		d.webCert.Set(p)
	}
}

// sshTarget is "USER@host" for the console's ssh -L hint: the daemon
// does not know who will open the tunnel.
func sshTarget() string {
	host, _ := os.Hostname()
	if host == "" {
		return ""
	}
	return "USER@" + host
}

// WebAddr is the web console's address, or "" when it is off.
func (d *Daemon) WebAddr() string {
	if d.webLn == nil {
		return ""
	}
	return d.webLn.Addr().String()
}

// AccountConfig implements web.Backend.
func (d *Daemon) AccountConfig(name string) *config.Account {
	if a := d.accounts.Get(name); a != nil {
		return a.Config
	}
	return nil
}

// Queue implements web.Backend and status.Backend.
var _ interface{ Queue() *queue.Queue } = (*Daemon)(nil)

// shutdownWeb stops the console.
func (d *Daemon) shutdownWeb(ctx context.Context) {
	if d.web != nil {
		d.web.Shutdown(ctx)
	}
}

// Console is the web console, or nil when it is off: tests sign in
// through it as relayd web-login would.
func (d *Daemon) Console() *web.Server { return d.web }
