// Package relaytest is the one builder of relayd's in-process tests: it
// builds, in the order relayd does, a fake identity provider, fake
// upstreams (internal/testkit), an account's configuration, its stored
// grant, its token source and the running account (package registry), and
// the queue with its SMTP transport. Each package's tests add their own
// listeners on top (the IMAP and SMTP servers in proxy, the whole daemon
// in internal/daemon). Code that imports package testing lives here, never
// in testkit, which the demo links.
package relaytest

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/registry"
	"github.com/relayd/relayd/transport"
	graphtransport "github.com/relayd/relayd/transport/graph"
	smtptransport "github.com/relayd/relayd/transport/smtp"
)

// Mailbox is the address of the account Account builds unless told
// otherwise.
const Mailbox = "support@example.com"

// Env is one test's relay under construction. Its fields are for the test
// to read.
type Env struct {
	T   testing.TB
	Dir string
	IdP *testkit.IdP
	// Logs holds everything logged through Log; it is printed when the
	// test fails.
	Logs *testkit.SyncBuffer
	Log  *slog.Logger
	// Store keeps the accounts' grants, in Dir/state.
	Store *auth.Store

	deadMu sync.Mutex
	dead   map[string]*testkit.Refuser
}

// New starts a fake IdP (client "client", no secret) and returns the
// environment.
func New(t testing.TB) *Env {
	t.Helper()
	e := &Env{T: t, Dir: t.TempDir(), IdP: testkit.StartIdP(t), Logs: &testkit.SyncBuffer{}}
	e.Log = slog.New(slog.NewTextHandler(e.Logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	e.Store = &auth.Store{Dir: filepath.Join(e.Dir, "state")}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("relayd log:\n%s", e.Logs.String())
		}
	})
	return e
}

// IMAPUpstream starts a fake XOAUTH2 IMAP server checking tokens at the
// IdP.
func (e *Env) IMAPUpstream(o testkit.IMAPOptions) *testkit.IMAPUpstream {
	e.T.Helper()
	up, err := testkit.NewIMAPUpstream(e.IdP, o)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { up.Close() })
	return up
}

// POP3Upstream starts a fake XOAUTH2 POP3 server checking tokens at the
// IdP.
func (e *Env) POP3Upstream(o testkit.POP3Options) *testkit.POP3Upstream {
	e.T.Helper()
	up, err := testkit.NewPOP3Upstream(e.IdP, o)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { up.Close() })
	return up
}

// SMTPUpstream starts a fake XOAUTH2 submission server checking tokens at
// the IdP.
func (e *Env) SMTPUpstream(o testkit.SMTPOptions) *testkit.SMTPUpstream {
	e.T.Helper()
	up, err := testkit.NewSMTPUpstream(e.IdP, o)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { up.Close() })
	return up
}

// DeadAddr is a loopback address where every connection is refused (an
// upstream that cannot be reached), until the test ends or Revive.
func (e *Env) DeadAddr() string {
	e.T.Helper()
	r, err := testkit.NewRefuser()
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(r.Close)
	e.deadMu.Lock()
	defer e.deadMu.Unlock()
	if e.dead == nil {
		e.dead = map[string]*testkit.Refuser{}
	}
	e.dead[r.Addr] = r
	return r.Addr
}

// Revive gives up a DeadAddr's port so that the test can start the
// upstream there.
func (e *Env) Revive(addr string) {
	e.deadMu.Lock()
	defer e.deadMu.Unlock()
	if r := e.dead[addr]; r != nil {
		r.Close()
		delete(e.dead, addr)
	}
}

// FreeAddr is a loopback address where nothing listens now, for a server
// the test starts later (whose address must be known before, as in a
// redirect URI).
func (e *Env) FreeAddr() string {
	e.T.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		e.T.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// TrustCA writes pem (a fake upstream's certificate) to a file and makes
// it a's ca_file.
func (e *Env) TrustCA(a *config.Account, pem []byte) {
	e.T.Helper()
	a.CAFile = filepath.Join(e.Dir, a.Name+"-ca.pem")
	if err := os.WriteFile(a.CAFile, pem, 0o600); err != nil {
		e.T.Fatal(err)
	}
}

// AccountOptions say how Account builds an account.
type AccountOptions struct {
	// Edit, when set, changes the parsed configuration before anything
	// is built from it (TLS, limits, a CA file).
	Edit func(*config.Account)
	// Password, for provider "password": the upstream password, written to
	// the account's password_file.
	Password string
	// NoGrant leaves the token store empty (an account not yet
	// authorized).
	NoGrant bool
	// Now is the token source's clock. Default time.Now.
	Now func() time.Time
}

// Account builds the running account of a from the same parts relayd
// uses: its configuration (the IdP's token endpoint and client "client"
// filled in for provider "custom"; Email defaults to Mailbox, Name to
// "support"), a grant issued by the IdP and stored, its token source and
// its condition (health defaults: no hook, no metrics, no outage budget;
// the daemon's tests build accounts through registry.Build).
func (e *Env) Account(a testkit.Account, o AccountOptions) *registry.Account {
	e.T.Helper()
	if a.Name == "" {
		a.Name = "support"
	}
	if a.Email == "" {
		a.Email = Mailbox
	}
	if a.Provider == "" {
		a.Provider = "custom"
	}
	if a.Provider == "custom" && a.TokenURL == "" {
		a.ClientID, a.TokenURL = "client", e.IdP.TokenURL()
	}
	if a.LocalPasswordHash == "" {
		a.LocalPasswordHash = testkit.UnusedHash
	}
	if o.Password != "" {
		a.PasswordFile = filepath.Join(e.Dir, a.Name+".password")
		if err := os.WriteFile(a.PasswordFile, []byte(o.Password+"\n"), 0o600); err != nil {
			e.T.Fatal(err)
		}
	}
	cfg := a.Parsed(e.T)
	if o.Edit != nil {
		o.Edit(cfg)
	}
	var src *auth.Source
	if cfg.OAuth() {
		if !o.NoGrant {
			login := cfg.Login
			if login == "" {
				login = cfg.Email
			}
			e.Grant(cfg.Name, cfg.ClientID, login)
		}
		var err error
		src, err = auth.NewSource(auth.SourceOptions{Account: cfg, Store: e.Store, Logger: e.Log, Now: o.Now})
		if err != nil {
			e.T.Fatal(err)
		}
	}
	creds, err := auth.NewAccount(cfg, src)
	if err != nil {
		e.T.Fatal(err)
	}
	return registry.Wrap(creds)
}

// Grant stores a grant for account name that the IdP issued to clientID
// for login, as 'relayd authorize' would.
func (e *Env) Grant(name, clientID, login string) {
	e.T.Helper()
	g := &auth.Grant{RefreshToken: e.IdP.IssueRefreshToken(clientID, login), GrantedAt: time.Now()}
	if err := e.Store.Save(name, g); err != nil {
		e.T.Fatal(err)
	}
}

// Registry makes a registry of accounts.
func Registry(accounts ...*registry.Account) *registry.Registry {
	m := map[string]*registry.Account{}
	for _, a := range accounts {
		m[a.Config.Name] = a
	}
	return registry.New(m)
}

// Queue opens a queue (OpenQueue) and runs it until the test ends.
func (e *Env) Queue(reg *registry.Registry, o queue.Options) *queue.Queue {
	e.T.Helper()
	q := e.OpenQueue(reg, o)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	e.T.Cleanup(func() {
		cancel()
		<-done
	})
	return q
}

// OpenQueue opens a queue in Dir/queue for the accounts of reg, with the
// SMTP and Graph transports (each account's own), and closes it when the test ends; it delivers nothing
// until Run. Zero fields of o take test defaults: retries after 20 ms (up
// to 4 times that), host name relayd.test, the environment's logger.
func (e *Env) OpenQueue(reg *registry.Registry, o queue.Options) *queue.Queue {
	e.T.Helper()
	if o.Dir == "" {
		o.Dir = filepath.Join(e.Dir, "queue")
	}
	if o.Logger == nil {
		o.Logger = e.Log
	}
	if o.Hostname == "" {
		o.Hostname = "relayd.test"
	}
	if o.RetryMin == 0 {
		o.RetryMin = 20 * time.Millisecond
	}
	if o.RetryMax == 0 {
		o.RetryMax = 4 * o.RetryMin
	}
	if o.Accounts == nil {
		o.Accounts = reg.Auth
	}
	if o.Transport == nil {
		o.Transport = transport.ByAccount{
			SMTP:  smtptransport.New(smtptransport.Options{Hostname: o.Hostname}),
			Graph: graphtransport.New(graphtransport.Options{Logger: e.Log}),
		}
	}
	q, err := queue.Open(o)
	if err != nil {
		e.T.Fatal(err)
	}
	e.T.Cleanup(func() { q.Close() })
	return q
}
