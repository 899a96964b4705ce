package web

import (
	"context"
	"crypto/tls"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/status"
)

// Backend is what the console shows and changes: the running daemon.
type Backend interface {
	Status() *status.Status
	Queue() *queue.Queue
	// InstallGrant checks g and makes it the grant of account name at
	// once, or refuses it (auth.ErrGrantRefused) and keeps the current
	// one, as for relayd authorize.
	InstallGrant(name string, g *auth.Grant) error
	// AccountConfig is the configuration of the running account name;
	// nil when there is none.
	AccountConfig(name string) *config.Account
}

// Options configure a Server. Zero fields take the defaults given.
type Options struct {
	Backend Backend
	Logger  *slog.Logger
	// Addr is [web] listen, as configured: the page and the sign-in
	// links name it.
	Addr string
	// TLS, when not nil, serves HTTPS ([web] tls_cert, tls_key).
	TLS *tls.Config
	// RedirectURI is [web] redirect_uri: where the identity provider
	// sends the browser back after "Reauthorize". Empty: the console
	// offers the device code or the pasted address instead.
	RedirectURI string
	// SessionIdle ends a session after that long without a request
	// ([web] session_idle). Default 30 minutes.
	SessionIdle time.Duration
	// LinkTTL is how long a relayd web-login link works. Default 10
	// minutes.
	LinkTTL time.Duration
	// SignInTTL is how long a started sign-in waits for its redirect, a
	// pasted address or the device code's approval. Default 10 minutes.
	SignInTTL time.Duration
	// HTTPClient talks to identity providers. Default: 30 s timeout.
	HTTPClient *http.Client
	// SSHTarget is "user@host" for the ssh -L hint.
	SSHTarget string
	// Now is the clock. Default time.Now.
	Now func() time.Time

	// MaxConns bounds the console's open connections, and
	// MaxConnsPerAddress those from one client address beyond loopback
	// (every ssh -L user is 127.0.0.1); further ones are closed at once.
	// Defaults 64 and 16.
	MaxConns, MaxConnsPerAddress int
	// ReadHeaderTimeout (default 10 s), RequestTimeout (reading a body
	// and writing an answer, default 30 s) and IdleTimeout (a keep-alive
	// connection without a request, default 60 s).
	ReadHeaderTimeout, RequestTimeout, IdleTimeout time.Duration
	// MaxStreams bounds the live-update streams open at once (default
	// 32, read-only sessions half of them); UpdateInterval is how often
	// the watcher reads the status for a change (default 250 ms).
	MaxStreams     int
	UpdateInterval time.Duration
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.SessionIdle, 30*time.Minute)
	def(&o.LinkTTL, 10*time.Minute)
	def(&o.SignInTTL, 10*time.Minute)
	def(&o.ReadHeaderTimeout, 10*time.Second)
	def(&o.RequestTimeout, 30*time.Second)
	def(&o.IdleTimeout, 60*time.Second)
	def(&o.UpdateInterval, 250*time.Millisecond)
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 64
	}
	if o.MaxConnsPerAddress <= 0 {
		o.MaxConnsPerAddress = 16
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = 32
	}
}

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// Server is the web console. Safe for use from any goroutine.
type Server struct {
	o        Options
	log      *slog.Logger
	sessions *sessions
	signins  *signins
	pages    *pages
	watch    *watch
	srv      *http.Server
	handler  http.Handler
	// streamsMu guards the live-update streams open: in all and of
	// read-only sessions.
	streamsMu            sync.Mutex
	streams, readStreams int
	// bgMu guards starting background work (wg.Add) against Shutdown.
	bgMu   sync.Mutex
	closed bool

	ctx    context.Context // ends at Shutdown: streams and sign-ins stop
	cancel context.CancelFunc
	wg     sync.WaitGroup // the device-code sign-ins waiting for approval
}

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// New returns a console serving o.Backend.
func New(o Options) *Server {
	o.defaults()
	s := &Server{o: o, log: o.Logger}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.sessions = newSessions(o.SessionIdle, o.LinkTTL, o.Now)
	s.signins = newSignins(o.SignInTTL, o.Now)
	s.pages = mustParsePages()
	s.watch = &watch{s: s}

	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	mux.HandleFunc("GET /static/{file}", func(w http.ResponseWriter, r *http.Request) {
		files.ServeHTTP(w, r) // one file; no directory listing
	})
	mux.HandleFunc("GET /{$}", s.session(s.handleIndex))
	mux.HandleFunc("GET /login", s.handleLoginPage)
	mux.HandleFunc("POST /login", s.handleLogin)
	mux.HandleFunc("POST /logout", s.session(s.form(s.handleLogout)))
	mux.HandleFunc("GET /events", s.session(s.handleEvents))
	mux.HandleFunc("GET /accounts/{name}/queue", s.session(s.handleQueue))
	mux.HandleFunc("POST /accounts/{name}/queue/{op}", s.session(s.form(s.admin("queue operation", s.handleAccountOp))))
	mux.HandleFunc("GET /queue/{id}", s.session(s.handleMessage))
	mux.HandleFunc("POST /queue/{id}/{op}", s.session(s.form(s.admin("queue operation", s.handleMessageOp))))
	mux.HandleFunc("GET /accounts/{name}/reauthorize", s.session(s.handleReauthorizePage))
	mux.HandleFunc("POST /accounts/{name}/reauthorize", s.session(s.form(s.admin("reauthorize", s.handleReauthorize))))
	mux.HandleFunc("GET /oauth/callback", s.handleCallback)
	mux.HandleFunc("GET /signin/{id}", s.handleSignIn)
	mux.HandleFunc("POST /signin/{id}/paste", s.session(s.form(s.admin("reauthorize (pasted address)", s.handlePaste))))
	mux.HandleFunc("/", s.handleNotFound)

	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.log.Warn("web console: refused a cross-origin request", "path", r.URL.Path, "remote", r.RemoteAddr)
		s.errorPage(w, r, http.StatusForbidden, "This request came from another site, so relayd refused it. Use the console's own pages.")
	}))
	s.handler = s.recovering(s.headers(cop.Handler(mux)))
	s.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			setDeadline(w, o.RequestTimeout)
			r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
			s.handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: o.ReadHeaderTimeout,
		IdleTimeout:       o.IdleTimeout,
		MaxHeaderBytes:    16 << 10,
		BaseContext:       func(net.Listener) context.Context { return s.ctx },
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelDebug),
	}
	return s
}

// Handler is the console's handler, without the listener's limits: for
// tests.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on ln until Shutdown, with TLS when Options.TLS is set;
// it returns ErrServerClosed then.
func (s *Server) Serve(ln net.Listener) error {
	ln = newLimitListener(ln, s.o.MaxConns, s.o.MaxConnsPerAddress, s.log)
	if s.o.TLS != nil {
		// HTTP/2 under TLS: a browser keeps one connection to the
		// console however many tabs hold a live-update stream (HTTP/1.1
		// allows 6 per host).
		cfg := s.o.TLS.Clone()
		cfg.NextProtos = []string{"h2", "http/1.1"}
		ln = tls.NewListener(ln, cfg)
	}
	return s.srv.Serve(ln)
}

// takeStream counts a live-update stream of a session of role, unless
// the streams are all taken (readers: half of them).
func (s *Server) takeStream(role Role) bool {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	if s.streams >= s.o.MaxStreams || role != Admin && s.readStreams >= s.o.MaxStreams/2 {
		return false
	}
	s.streams++
	if role != Admin {
		s.readStreams++
	}
	return true
}

func (s *Server) releaseStream(role Role) {
	s.streamsMu.Lock()
	defer s.streamsMu.Unlock()
	s.streams--
	if role != Admin {
		s.readStreams--
	}
}

// background runs f in a goroutine Shutdown waits for, unless the server
// is shutting down (then it reports false and f does not run).
func (s *Server) background(f func()) bool {
	s.bgMu.Lock()
	defer s.bgMu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

func (s *Server) stopBackground() {
	s.bgMu.Lock()
	s.closed = true
	s.bgMu.Unlock()
	s.cancel()
}

// Shutdown stops accepting, ends the live-update streams and the
// sign-ins waiting for a device code, and waits for requests in
// progress until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	s.stopBackground()
	err := s.srv.Shutdown(ctx)
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		return errors.Join(err, ctx.Err())
	}
	return err
}

// Close closes the listeners and connections at once.
func (s *Server) Close() error {
	s.stopBackground()
	err := s.srv.Close()
	s.wg.Wait()
	return err
}

// IssueLink returns a one-time address that starts a console session,
// an admin's when admin is true, else a read-only one, valid for
// Options.LinkTTL: relayd web-login prints it. origin says who asked
// (for the audit log of the session's changes). The link is a secret:
// it is never logged. Safe from any goroutine.
func (s *Server) IssueLink(admin bool, origin string) (string, time.Time) {
	role := Reader
	if admin {
		role = Admin
	}
	token, expires := s.sessions.issue(role, origin)
	s.log.Info("web console: sign-in link issued", "role", role.String(), "by", origin, "expires", expires.Format(time.RFC3339))
	return s.BaseURL() + "/login?t=" + url.QueryEscape(token), expires
}

// BaseURL is the console's address as the browser reaches it: the origin
// of [web] redirect_uri when one is set (the session cookie then belongs
// to the host the sign-in comes back to), else listen's, https:// under
// TLS and this machine's name for a wildcard address.
func (s *Server) BaseURL() string {
	if u, err := url.Parse(s.o.RedirectURI); s.o.RedirectURI != "" && err == nil && u.Host != "" {
		return u.Scheme + "://" + u.Host
	}
	scheme := "http"
	if s.o.TLS != nil {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(s.o.Addr)
	if err != nil {
		return scheme + "://" + s.o.Addr
	}
	if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
		host, _ = os.Hostname()
	}
	return scheme + "://" + net.JoinHostPort(host, port)
}

// EndSessions ends every console session and unused link: a reload
// changed who is an admin, and a session keeps the role it started with.
// Safe from any goroutine.
func (s *Server) EndSessions(why string) {
	if n := s.sessions.endAll(); n > 0 {
		s.log.Warn("web console: every session ended; sign in again with relayd web-login", "sessions", n, "why", why)
	}
}

// Addr is [web] listen, as configured.
func (s *Server) Addr() string { return s.o.Addr }

// LoopbackOnly reports whether the console listens on loopback only.
func (s *Server) LoopbackOnly() bool { return loopbackOnly(s.o.Addr) }

func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// setDeadline gives the request answered through w d from now.
func setDeadline(w http.ResponseWriter, d time.Duration) {
	rc := http.NewResponseController(w)
	t := time.Now().Add(d)
	rc.SetReadDeadline(t)
	rc.SetWriteDeadline(t)
}

// headers sets the security headers every answer carries. The
// Content-Security-Policy allows no inline script or style, no request
// outside relayd, and forms that post to relayd only: the way to the
// identity provider is a page of relayd's that moves on (a form's
// redirect would have to pass form-action at every hop, and an IdP may
// redirect to another origin of its own).
func (s *Server) headers(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
			"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		hd.Set("X-Frame-Options", "DENY")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		hd.Set("Cross-Origin-Resource-Policy", "same-origin")
		hd.Set("Cache-Control", "no-store")
		h.ServeHTTP(w, r)
	})
}

// recovering answers 500 for a request whose handler panicked, after
// logging and counting it.
func (s *Server) recovering(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				health.Recovered(s.log, nil, "answering "+r.Method+" "+r.URL.Path+" on the web console", v)
				http.Error(w, "internal error in relayd; its log has the details", http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// The session cookie's name: under TLS with the __Host- prefix, which
// browsers accept only from a secure origin, for the whole host.
const (
	cookieName       = "relayd_console"
	secureCookieName = "__Host-relayd_console"
)

func (s *Server) cookieName() string {
	if s.o.TLS != nil {
		return secureCookieName
	}
	return cookieName
}

type sessionHandler func(w http.ResponseWriter, r *http.Request, ss *session)

// session runs h for a signed-in browser. Without a session a page
// request gets the sign-in page, anything else 403.
func (s *Server) session(h sessionHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var ss *session
		if c, err := r.Cookie(s.cookieName()); err == nil {
			ss = s.sessions.get(c.Value, r.URL.Path != "/events")
		}
		if ss == nil {
			if r.Method == http.MethodGet && r.URL.Path != "/events" {
				s.loginPage(w, r, http.StatusUnauthorized, "")
				return
			}
			s.errorPage(w, r, http.StatusForbidden, "Your console session has ended. Run relayd web-login on the server for a new link.")
			return
		}
		h(w, r, ss)
	}
}

// form checks a POST's CSRF token.
func (s *Server) form(h sessionHandler) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, ss *session) {
		if !checkCSRF(r, ss) {
			s.log.Warn("web console: refused a form without the session's CSRF token", "path", r.URL.Path, "remote", r.RemoteAddr, "session_by", ss.origin)
			s.errorPage(w, r, http.StatusForbidden, "This form is out of date or did not come from the console. Go back, reload the page and try again.")
			return
		}
		h(w, r, ss)
	}
}

// admin refuses read-only sessions, and logs an admin's change with the
// session's origin, as the status socket logs its callers.
func (s *Server) admin(what string, h sessionHandler) sessionHandler {
	return func(w http.ResponseWriter, r *http.Request, ss *session) {
		if ss.role != Admin {
			s.log.Warn("web console: refused a change from a read-only session", "call", what, "path", r.URL.Path, "remote", r.RemoteAddr, "session_by", ss.origin)
			s.errorPage(w, r, http.StatusForbidden, "This session is read-only: it may look but not change anything. An admin (root, relayd's user or a member of admin_group) gets a session that may, from relayd web-login.")
			return
		}
		s.log.Info("web console: "+what, "path", r.URL.Path, "remote", r.RemoteAddr, "session_by", ss.origin)
		h(w, r, ss)
	}
}

// handleLoginPage shows the button that uses a link: a GET changes
// nothing, so a link previewer or a mail scanner does not use it up, and
// the POST it makes comes from relayd's own page (the cookie it sets then
// comes back on the redirect that follows; a link clicked on another site
// would start a cross-site chain, where a SameSite=Strict cookie is not
// sent). The token leaves the address bar once it is used.
func (s *Server) handleLoginPage(w http.ResponseWriter, r *http.Request) {
	token := r.URL.Query().Get("t")
	l, ok := s.sessions.peek(token)
	if !ok {
		s.log.Warn("web console: refused a sign-in link", "remote", r.RemoteAddr, "err", errLinkUsed)
		s.loginPage(w, r, http.StatusForbidden, "That sign-in link was already used, has expired, or is not one relayd issued. Run relayd web-login on the server for a new one.")
		return
	}
	// Whose link it is and what it may do, so that nobody opens a
	// session someone else's link started without knowing.
	s.render(w, http.StatusOK, "open", openData{base: s.base("Open the console", nil), Token: token,
		Role: l.role.String(), By: l.origin, Expires: s.when(l.expires)})
}

type openData struct {
	base
	Token, Role, By string
	Expires         when
}

func (s *Server) handleLogin(w http.ResponseWriter, r *http.Request) {
	token := r.PostFormValue("t")
	ss, err := s.sessions.redeem(token)
	if err != nil {
		s.log.Warn("web console: refused a sign-in link", "remote", r.RemoteAddr, "err", err)
		s.loginPage(w, r, http.StatusForbidden, "That sign-in link was already used, has expired, or is not one relayd issued. Run relayd web-login on the server for a new one.")
		return
	}
	s.log.Info("web console: session started", "role", ss.role.String(), "remote", r.RemoteAddr, "session_by", ss.origin)
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: ss.id, Path: "/", HttpOnly: true,
		Secure: s.o.TLS != nil, SameSite: http.SameSiteStrictMode})
	// The link's token leaves the address bar.
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (s *Server) handleLogout(w http.ResponseWriter, r *http.Request, ss *session) {
	s.sessions.end(ss.id)
	s.signins.endOwner(ss)
	s.log.Info("web console: session ended by its user", "remote", r.RemoteAddr, "session_by", ss.origin)
	http.SetCookie(w, &http.Cookie{Name: s.cookieName(), Value: "", Path: "/", MaxAge: -1, HttpOnly: true,
		Secure: s.o.TLS != nil, SameSite: http.SameSiteStrictMode})
	s.loginPage(w, r, http.StatusOK, "You are signed out.")
}

func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	s.errorPage(w, r, http.StatusNotFound, "There is no such page in relayd's console.")
}

// listenNote says where the console is reachable from, for its footer.
func (s *Server) listenNote() string {
	if s.LoopbackOnly() {
		_, port, _ := net.SplitHostPort(s.o.Addr)
		target := s.o.SSHTarget
		if target == "" {
			target = "USER@THIS-SERVER"
		}
		return fmt.Sprintf("This console listens on %s, on the server only. From another machine, forward its port first (ssh -L %s:%s %s), then open the link relayd web-login prints.",
			s.o.Addr, port, s.o.Addr, target)
	}
	return fmt.Sprintf("This console listens on %s and is reachable from the network (HTTPS). Sessions start only from relayd web-login on the server.", s.o.Addr)
}
