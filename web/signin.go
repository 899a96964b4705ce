package web

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/signin"
)

// Sign-in methods the console offers.
const (
	// methodRedirect: the browser is sent back to [web] redirect_uri.
	methodRedirect = "redirect"
	// methodDevice: a device code, entered on any browser (Microsoft).
	methodDevice = "device"
	// methodPaste: a loopback redirect whose address the person pastes
	// into the console (Google allows no device flow for mail).
	methodPaste = "paste"
)

// maxAttempts bounds the sign-ins in progress at once (a session has one
// per account: a new one replaces it), maxOutcomes the finished ones kept
// for their pages.
const (
	maxAttempts = 16
	maxOutcomes = 64
)

// attempt is one reauthorization started from the console.
type attempt struct {
	id      string // names its page, /signin/{id}
	account string
	method  string
	owner   *session // the session that started it
	origin  string   // that session's origin, for the audit log
	created time.Time

	pending *signin.Pending    // redirect and paste
	device  *signin.DeviceCode // device
	// waitCtx is the device code's polling, which stop ends (a newer
	// sign-in of the same session and account replaced this one, or the
	// session ended).
	waitCtx context.Context
	stop    context.CancelFunc

	// claimed: a request or the device wait is finishing it; done: its
	// outcome is known. Guarded by signins.mu.
	claimed bool
	done    bool
	ok      bool
	result  string
}

// signins are the console's sign-ins in progress and, for a while, their
// outcomes. A sign-in is bound to the session that started it here, on
// the server: the identity provider's redirect back carries no
// SameSite=Strict cookie, only the state. Safe from any goroutine.
type signins struct {
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	byID    map[string]*attempt
	byState map[string]*attempt // redirect sign-ins waiting for the callback
}

func newSignins(ttl time.Duration, now func() time.Time) *signins {
	return &signins{ttl: ttl, now: now, byID: map[string]*attempt{}, byState: map[string]*attempt{}}
}

var errTooManySignIns = errors.New("too many sign-ins are in progress; finish or wait for one, then try again")

// add records a new attempt. It replaces the unfinished sign-in of the
// same session and account (a person who clicks Reauthorize again wants
// the new one), and refuses one beyond maxAttempts unfinished.
func (s *signins) add(at *attempt) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked()
	pending := 0
	for _, o := range s.byID {
		if o.done {
			continue
		}
		if o.owner == at.owner && o.account == at.account && !o.claimed {
			s.dropLocked(o)
			continue
		}
		pending++
	}
	if pending >= maxAttempts {
		return errTooManySignIns
	}
	s.byID[at.id] = at
	if at.method == methodRedirect {
		s.byState[at.pending.State] = at
	}
	return nil
}

// dropLocked forgets at and stops its polling.
func (s *signins) dropLocked(at *attempt) {
	delete(s.byID, at.id)
	delete(s.byState, stateOf(at))
	if at.stop != nil {
		at.stop()
	}
}

// endOwner forgets the unfinished sign-ins ss started (it signed out).
func (s *signins) endOwner(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, at := range s.byID {
		if at.owner == ss && !at.done && !at.claimed {
			s.dropLocked(at)
		}
	}
}

// takeState returns the redirect sign-in whose state is state, once: the
// state works for one callback, whatever its outcome.
func (s *signins) takeState(state string) *attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked()
	at := s.byState[state]
	if at == nil {
		return nil
	}
	delete(s.byState, state)
	// The map lookup found it; compare once more in constant time so the
	// state is never matched by a timing side channel of the map.
	if subtle.ConstantTimeCompare([]byte(at.pending.State), []byte(state)) != 1 {
		return nil
	}
	return at
}

func (s *signins) get(id string) *attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked()
	return s.byID[id]
}

// claim marks at as being finished, once: it reports false when it is
// done already or another request finishes it.
func (s *signins) claim(at *attempt) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if at.claimed || at.done {
		return false
	}
	at.claimed = true
	return true
}

func (s *signins) finish(at *attempt, ok bool, result string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	at.claimed, at.done, at.ok, at.result = true, true, ok, result
	delete(s.byState, stateOf(at))
}

func stateOf(at *attempt) string {
	if at.pending != nil {
		return at.pending.State
	}
	return ""
}

// outcome returns at's outcome under the lock.
func (s *signins) outcome(at *attempt) (claimed, done, ok bool, result string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return at.claimed, at.done, at.ok, at.result
}

// pruneLocked forgets unfinished attempts past their time (ttl, or the
// device code's own expiry when later) and finished ones ttl after they
// started, or the oldest beyond maxOutcomes.
func (s *signins) pruneLocked() {
	now := s.now()
	var done []*attempt
	for _, at := range s.byID {
		end := at.created.Add(s.ttl)
		if at.device != nil && at.device.Expiry.After(end) {
			end = at.device.Expiry
		}
		if at.done {
			end = at.created.Add(2 * s.ttl)
			done = append(done, at)
		}
		if !now.Before(end) {
			s.dropLocked(at)
		}
	}
	if len(done) > maxOutcomes {
		slices.SortFunc(done, func(a, b *attempt) int { return a.created.Compare(b.created) })
		for _, at := range done[:len(done)-maxOutcomes] {
			s.dropLocked(at)
		}
	}
}

// methods lists the sign-in methods account a allows from the console,
// the preferred first.
func (s *Server) methods(a *config.Account) []string {
	var m []string
	if s.o.RedirectURI != "" && a.AuthURL != "" {
		m = append(m, methodRedirect)
	}
	if a.DeviceAuthURL != "" && a.DeviceFlow {
		m = append(m, methodDevice)
	}
	if a.AuthURL != "" {
		m = append(m, methodPaste)
	}
	return m
}

// reauthorizable returns the configuration of account name when the
// console can reauthorize it, or answers why not.
func (s *Server) reauthorizable(w http.ResponseWriter, r *http.Request, name string) *config.Account {
	a := s.o.Backend.AccountConfig(name)
	switch {
	case a == nil:
		s.errorPage(w, r, http.StatusNotFound, "relayd has no mailbox of that name.")
		return nil
	case !a.OAuth():
		s.errorPage(w, r, http.StatusBadRequest, fmt.Sprintf("Mailbox %s signs in upstream with a password, not OAuth: put the new password in its password file on the server, then run relayd reload.", name))
		return nil
	case a.AppOnly():
		s.errorPage(w, r, http.StatusBadRequest, fmt.Sprintf("Mailbox %s uses the app's own credentials (%s): nobody signs in for it. relayd doctor %s checks them.", name, a.Grant, name))
		return nil
	case len(s.methods(a)) == 0:
		s.errorPage(w, r, http.StatusBadRequest, fmt.Sprintf("Mailbox %s has no sign-in address (auth_url) or device code address configured.", name))
		return nil
	}
	return a
}

type reauthorizeData struct {
	base
	Mailbox  mailbox
	Methods  []string
	Provider string
	Redirect string // [web] redirect_uri
	Loopback string // the paste method's redirect
}

func (s *Server) handleReauthorizePage(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.PathValue("name")
	a := s.reauthorizable(w, r, name)
	if a == nil {
		return
	}
	st := s.account(name)
	if st == nil {
		s.errorPage(w, r, http.StatusNotFound, "relayd has no mailbox of that name.")
		return
	}
	s.render(w, http.StatusOK, "reauthorize", reauthorizeData{base: s.base("Reauthorize "+name, ss), Mailbox: s.mailbox(st),
		Methods: s.methods(a), Provider: a.Provider, Redirect: s.o.RedirectURI, Loopback: loopbackRedirect(a)})
}

// loopbackRedirect is the paste method's redirect address: the loopback
// address relayd authorize --browser uses (Microsoft matches
// http://localhost on any port, Google http://127.0.0.1). Nothing listens
// there: the browser's page fails to load and the person pastes its
// address into the console.
func loopbackRedirect(a *config.Account) string {
	host := a.RedirectHost
	if host == "" {
		host = "127.0.0.1"
	}
	port := a.RedirectPort
	if port == 0 {
		port = 8400
	}
	return "http://" + net.JoinHostPort(host, strconv.Itoa(port))
}

func (s *Server) signIn(a *config.Account) *signin.SignIn {
	return &signin.SignIn{Account: a, HTTPClient: s.o.HTTPClient, Now: s.o.Now}
}

// handleReauthorize starts a sign-in by the method the form names (the
// preferred one when none).
func (s *Server) handleReauthorize(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.PathValue("name")
	a := s.reauthorizable(w, r, name)
	if a == nil {
		return
	}
	methods := s.methods(a)
	method := r.PostFormValue("method")
	if method == "" {
		method = methods[0]
	}
	if !slices.Contains(methods, method) {
		s.errorPage(w, r, http.StatusBadRequest, fmt.Sprintf("Mailbox %s cannot be signed in that way from the console; the reauthorize page lists the ways it can.", name))
		return
	}
	at := &attempt{id: newToken(), account: name, method: method, owner: ss, origin: ss.origin, created: s.o.Now()}
	var err error
	switch method {
	case methodRedirect:
		at.pending, err = s.signIn(a).Start(s.o.RedirectURI)
	case methodPaste:
		at.pending, err = s.signIn(a).Start(loopbackRedirect(a))
	case methodDevice:
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		at.device, err = s.signIn(a).StartDevice(ctx)
		cancel()
		if err == nil {
			at.waitCtx, at.stop = context.WithDeadline(s.ctx, at.device.Expiry)
		}
	}
	status := http.StatusBadGateway // the identity provider's part failed
	if err == nil {
		if err = s.signins.add(at); err != nil {
			status = http.StatusServiceUnavailable
		}
	}
	if err != nil {
		if at.stop != nil {
			at.stop()
		}
		s.log.Warn("web console: could not start a sign-in", "account", name, "method", method, "err", err, "session_by", ss.origin)
		s.errorPage(w, r, status, consoleText(err))
		return
	}
	s.log.Info("web console: sign-in started", "account", name, "method", method, "remote", r.RemoteAddr, "session_by", ss.origin)
	switch method {
	case methodRedirect:
		// A page that moves on, not a redirect: see headers.
		d := continueData{base: s.base("Reauthorize "+name, ss), Account: name, Login: a.Login}
		d.MoveTo = at.pending.AuthURL
		s.render(w, http.StatusOK, "continue", d)
	case methodDevice:
		if !s.background(func() { s.waitDevice(at) }) {
			s.errorPage(w, r, http.StatusServiceUnavailable, "relayd is stopping; try again once it runs.")
			return
		}
		http.Redirect(w, r, "/signin/"+at.id, http.StatusSeeOther)
	default:
		http.Redirect(w, r, "/signin/"+at.id, http.StatusSeeOther)
	}
}

// waitDevice waits for the person to approve a device code, then hands
// the grant to the account.
func (s *Server) waitDevice(at *attempt) {
	defer at.stop()
	ctx := at.waitCtx
	g, err := at.device.Wait(ctx)
	if ctx.Err() != nil && err != nil {
		// relayd stops, the code expired, or the sign-in was replaced
		// or its session ended (then nobody reads the outcome).
		s.signins.finish(at, false, "The code expired, or relayd stopped, before the sign-in ended; nothing was stored. Start again with Reauthorize.")
		return
	}
	if !s.signins.claim(at) {
		return
	}
	s.complete(at, g, err, "")
}

// complete hands g (when err is nil) to the account and records the
// outcome for the sign-in's page.
func (s *Server) complete(at *attempt, g *auth.Grant, err error, remote string) {
	if err == nil && (!s.sessions.alive(at.owner) || at.owner.role != Admin) {
		// The sign-in acts for the admin session that started it, and
		// for no longer than it lives.
		err = errors.New("the console session that started this sign-in has ended; nothing was stored. Sign in to the console again (relayd web-login) and click Reauthorize")
	}
	if err == nil {
		err = s.o.Backend.InstallGrant(at.account, g)
	}
	if err != nil {
		s.log.Warn("web console: sign-in refused; the current grant stays in force", "account", at.account, "method", at.method,
			"err", err, "remote", remote, "session_by", at.origin)
		s.signins.finish(at, false, consoleText(err))
		return
	}
	s.log.Info("web console: grant handed over", "account", at.account, "signed_in_as", g.Subject, "method", at.method,
		"remote", remote, "session_by", at.origin)
	s.signins.finish(at, true, fmt.Sprintf("Signed in as %s. Mailbox %s is authorized; mail held for it goes out now.", g.Subject, at.account))
}

// consoleText is err as the sign-in's page says it: the wrong-account
// refusal points at the console's button rather than the command line.
func consoleText(err error) string {
	var wa *auth.WrongAccountError
	if errors.As(err, &wa) {
		return fmt.Sprintf("The sign-in was as %s, but mailbox %s signs in as %s; nothing was stored and the current sign-in stays in force. "+
			"Sign out of %s at the sign-in page (or use a private window), then click Reauthorize again and sign in as %s.",
			wa.SignedIn, wa.Account, wa.Expected, wa.SignedIn, wa.Expected)
	}
	return err.Error()
}

// handleCallback takes the identity provider's redirect. It needs no
// cookie: the state names the sign-in and the session that started it,
// once.
func (s *Server) handleCallback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	at := s.signins.takeState(q.Get("state"))
	if at == nil || at.method != methodRedirect {
		s.log.Warn("web console: refused a sign-in redirect that belongs to no sign-in in progress", "remote", r.RemoteAddr)
		s.errorPage(w, r, http.StatusBadRequest, "This sign-in is not one relayd's console started, was already used, or has expired; nothing was stored. Start again with Reauthorize.")
		return
	}
	if !s.signins.claim(at) {
		s.errorPage(w, r, http.StatusBadRequest, "This sign-in was already used; nothing more was stored.")
		return
	}
	s.finishPending(w, r, at, q)
}

// finishPending finishes a claimed redirect or paste sign-in with the
// query the redirect carried, records its outcome and sends the browser
// to the sign-in's page (so that the code leaves the address bar).
func (s *Server) finishPending(w http.ResponseWriter, r *http.Request, at *attempt, q url.Values) {
	setDeadline(w, 3*time.Minute) // the code's exchange, then a refresh with the new grant
	var g *auth.Grant
	err := fmt.Errorf("account %q is not configured any more; nothing was stored", at.account)
	if s.o.Backend.AccountConfig(at.account) != nil {
		g, err = at.pending.Finish(r.Context(), q)
	}
	s.complete(at, g, err, r.RemoteAddr)
	http.Redirect(w, r, "/signin/"+at.id, http.StatusSeeOther)
}

// handlePaste finishes a paste sign-in from the address the person
// pasted.
func (s *Server) handlePaste(w http.ResponseWriter, r *http.Request, ss *session) {
	at := s.signins.get(r.PathValue("id"))
	if at == nil || at.owner != ss || at.method != methodPaste {
		s.errorPage(w, r, http.StatusNotFound, "This sign-in is over or was started by another session. Start again with Reauthorize.")
		return
	}
	query, err := signin.ParsePasted(r.PostFormValue("address"))
	if err != nil {
		s.sessions.setFlash(ss, err.Error()+". Paste the whole address from the browser's address bar.")
		http.Redirect(w, r, "/signin/"+at.id, http.StatusSeeOther)
		return
	}
	if subtle.ConstantTimeCompare([]byte(query.Get("state")), []byte(at.pending.State)) != 1 {
		// An older attempt's address, or another's: this sign-in goes on
		// waiting for its own.
		s.sessions.setFlash(ss, "That address belongs to another sign-in (its state differs): use the link on this page, then paste the address the browser ends at.")
		http.Redirect(w, r, "/signin/"+at.id, http.StatusSeeOther)
		return
	}
	if !s.signins.claim(at) {
		http.Redirect(w, r, "/signin/"+at.id, http.StatusSeeOther)
		return
	}
	s.finishPending(w, r, at, query)
}

type continueData struct {
	base
	Account, Login string
}

type signinData struct {
	base
	ID      string
	Account string
	Method  string
	Owner   bool // the page's viewer started the sign-in
	Done    bool
	OK      bool
	Result  string
	// While a device code waits: the code, where to enter it, its QR
	// code and when it expires. While a paste sign-in waits: AuthURL.
	UserCode, VerificationURI string
	QR                        template.HTML
	Expires                   when
	AuthURL                   string
}

// handleSignIn shows a sign-in: its outcome to anyone who has its
// address (the browser the identity provider sent back has no cookie),
// and while it waits, what the person must do to the session that
// started it only.
func (s *Server) handleSignIn(w http.ResponseWriter, r *http.Request) {
	at := s.signins.get(r.PathValue("id"))
	if at == nil {
		s.errorPage(w, r, http.StatusNotFound, "This sign-in is over or unknown. Start again with Reauthorize if the mailbox still needs it.")
		return
	}
	var ss *session
	if c, err := r.Cookie(s.cookieName()); err == nil {
		ss = s.sessions.get(c.Value, true)
	}
	d := signinData{base: s.base("Reauthorize "+at.account, ss), ID: at.id, Account: at.account, Method: at.method, Owner: ss != nil && ss == at.owner}
	var claimed bool
	claimed, d.Done, d.OK, d.Result = s.signins.outcome(at)
	if claimed && !d.Done {
		d.Result, d.Refresh = "The sign-in is being checked…", 2
	} else if !d.Done && d.Owner {
		switch at.method {
		case methodDevice:
			d.UserCode, d.VerificationURI, d.Expires = at.device.UserCode, at.device.VerificationURI, s.when(at.device.Expiry)
			d.QR = qrSVG(at.device.VerificationURI)
			d.Refresh = 3
		case methodPaste:
			d.AuthURL = at.pending.AuthURL
		}
	}
	if !claimed && !d.Owner {
		d.Result = "This sign-in is in progress in another console session."
	}
	s.render(w, http.StatusOK, "signin", d)
}

// qrSVG draws text's QR code as an inline SVG (no request, no script).
func qrSVG(text string) template.HTML {
	mods, err := signin.QRModules(text)
	if err != nil || len(mods) == 0 {
		return ""
	}
	n := len(mods)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg class="qr" role="img" aria-label="QR code of the sign-in address" viewBox="-4 -4 %d %d" xmlns="http://www.w3.org/2000/svg"><rect x="-4" y="-4" width="%d" height="%d" fill="#fff"/><path fill="#000" d="`, n+8, n+8, n+8, n+8)
	for y, row := range mods {
		for x, dark := range row {
			if dark {
				fmt.Fprintf(&b, "M%d %dh1v1h-1z", x, y)
			}
		}
	}
	b.WriteString(`"/></svg>`)
	return template.HTML(b.String()) // built here from numbers only
}
