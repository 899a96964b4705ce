package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/provider"
)

// SourceOptions configure a Source.
type SourceOptions struct {
	Account *config.Account
	Store   *Store
	// HTTPClient talks to the token endpoint. Default: a client with a
	// 30 second timeout.
	HTTPClient *http.Client
	Logger     *slog.Logger
	// RefreshMargin: an access token with less than this left is refreshed
	// before use, because Exchange ends a session when its token expires.
	// Default 10 minutes.
	RefreshMargin time.Duration
	// RetryBudget scheduled probes over RetryWindow: while the token
	// endpoint fails transiently (network, timeouts, HTTP 5xx, 429) the
	// account is degraded and Run probes it every RetryWindow/RetryBudget;
	// once RetryBudget probes failed it is disconnected, and Run probes on
	// every SlowProbe until the endpoint answers. Refreshes for logins do
	// not count. Defaults 8 over 12 minutes (a helpdesk connector's
	// figures), SlowProbe 4 probe intervals, at most 30 minutes.
	RetryBudget int
	RetryWindow time.Duration
	SlowProbe   time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// KeepAlive: Run refreshes a grant that has not been refreshed for
	// this long, so that a mailbox nobody reads does not lose its grant
	// (Microsoft: 90 days unused). Default 24 hours.
	KeepAlive time.Duration
	// Health is the account's condition, which the source reports to.
	// Default: a new one.
	Health *health.Account
	// SaveRetry: after a refreshed grant could not be stored (a full or
	// read-only state directory), Run tries again this often until it
	// is, so that its rotated refresh token survives the next restart.
	// Default 1 minute.
	SaveRetry time.Duration
}

// Source hands out access tokens for one account. All connections of the
// account share it: at most one refresh runs at a time, and concurrent
// callers wait for its result. Rotated refresh tokens are persisted to the
// Store on every refresh. Methods are safe for use from any goroutine.
type Source struct {
	opts   SourceOptions
	acct   *config.Account
	log    *slog.Logger
	secret string

	// App-only credentials, loaded once: a service account key, or a
	// client certificate for assertions.
	serviceAccount *serviceAccountKey
	cert           *clientCertificate

	// fetchMu makes requests to the token endpoint one at a time, so that
	// a refresh for one resource starts from the refresh token another
	// resource's refresh may just have rotated.
	fetchMu sync.Mutex
	// refreshing counts the token requests running (Wait).
	refreshing sync.WaitGroup

	mu    sync.Mutex
	grant *Grant // nil: none stored
	// unsaved: grant is newer than the one in the store (its Save
	// failed); Run saves it again every SaveRetry, and a use of a token
	// at most every 5 s (saveTried).
	unsaved   bool
	saveTried time.Time
	gen       uint64 // bumped by Install; a refresh started before is discarded
	inflight  [numResources]*refreshCall
	health    *health.Account
	probes    int           // scheduled probes since the endpoint last answered
	lastProbe time.Time     // when the last of them ran
	downSince time.Time     // first transient failure since it last answered
	installCh chan struct{} // closed by Install
	// undecryptable is the condition of a stored grant no key opens;
	// nil once a grant is installed.
	undecryptable *health.Error
	// scope is what the token endpoint said it granted with the last
	// token of each resource (RFC 6749 §5.1 "scope"; "" when it did not
	// say), for relayd doctor.
	scope [numResources]string
}

// Resource is an API the account's access tokens are for. Microsoft's
// identity platform issues a token for one resource per request (asking
// for two answers AADSTS28000), so an account keeps one access token per
// resource, all from its one refresh token, each refreshed on its own.
type Resource int

const (
	// ResourceMail is IMAP, POP3 and SMTP: the account's scopes.
	ResourceMail Resource = iota
	// ResourceGraph is Microsoft Graph (transport = "graph"): the
	// account's graph_scopes.
	ResourceGraph
	numResources
)

func (r Resource) String() string {
	if r == ResourceGraph {
		return "graph"
	}
	return "mail"
}

type refreshCall struct {
	done  chan struct{}
	token string
	err   error
}

// NewSource returns the token source of an OAuth account, loading its
// stored grant, if any.
func NewSource(opts SourceOptions) (*Source, error) {
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.RefreshMargin == 0 {
		opts.RefreshMargin = 10 * time.Minute
	}
	if opts.RetryBudget <= 0 {
		opts.RetryBudget = 8
	}
	if opts.RetryWindow <= 0 {
		opts.RetryWindow = 12 * time.Minute
	}
	if opts.SlowProbe <= 0 {
		opts.SlowProbe = min(4*opts.RetryWindow/time.Duration(opts.RetryBudget), 30*time.Minute)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = 24 * time.Hour
	}
	if opts.SaveRetry <= 0 {
		opts.SaveRetry = time.Minute
	}
	a := opts.Account
	if opts.Health == nil {
		opts.Health = health.New(a.Name, health.Options{Logger: opts.Logger, Now: opts.Now})
	}
	s := &Source{opts: opts, acct: a, log: opts.Logger.With("account", a.Name), health: opts.Health}
	secret, err := ClientSecret(a)
	if err != nil {
		return nil, err
	}
	s.secret = secret
	switch {
	case a.Grant == config.GrantServiceAccount:
		if s.serviceAccount, err = loadServiceAccount(a); err != nil {
			return nil, err
		}
	case a.ClientCertificateFile != "":
		if s.cert, err = loadClientCertificate(a); err != nil {
			return nil, err
		}
	}
	g, err := opts.Store.Load(a.Name)
	switch {
	case errors.Is(err, ErrNoGrant):
		if !a.AppOnly() {
			s.health.Fail(health.SourceToken, Classify(a, errNoGrant))
		}
	case errors.Is(err, ErrUndecryptable) && a.AppOnly():
		// Only cached access tokens were in it: fetch new ones, and
		// leave the file alone (Save refuses to overwrite it).
		s.log.Warn("the stored access tokens cannot be decrypted; fetching new ones", "err", err)
	case errors.Is(err, ErrUndecryptable):
		s.undecryptable = Undecryptable(a.Name, err)
		s.health.Fail(health.SourceToken, s.undecryptable)
	case err != nil:
		return nil, err
	default:
		s.grant = g
		opts.Health.SetForecast(s.forecast())
	}
	return s, nil
}

// Undecryptable is the condition of account name whose stored grant no
// key opens (err wraps ErrUndecryptable): needs_admin, with advice naming
// the key to restore. The file is never overwritten but by a new grant.
func Undecryptable(name string, err error) *health.Error {
	return &health.Error{Account: name, State: health.StateNeedsAdmin, Reason: health.ReasonGrantUndecryptable,
		Advice: fmt.Sprintf("the stored grant cannot be decrypted (%v); relayd keeps the file as it is. "+
			"Restore the key it was encrypted under to key_file (or the systemd credential relayd.key) from its backup and restart relayd, "+
			"or run 'relayd authorize %s' for a new grant", err, name),
		Client: fmt.Sprintf("mailbox %q needs an administrator: see 'relayd status'", name), Err: err}
}

// ReadSecretFile reads a secret (client secret, password) from a file,
// without its trailing newline.
func ReadSecretFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := strings.TrimRight(string(b), "\r\n")
	if s == "" {
		return "", fmt.Errorf("%s is empty", path)
	}
	return s, nil
}

// Run keeps the grant alive until ctx ends: it refreshes a grant unused
// for KeepAlive, so that an idle mailbox never reaches its provider's
// inactivity limit, and probes the token endpoint while it fails
// transiently (see RetryBudget). An account whose grant is dead, or that
// needs an admin, is left alone until a new grant is installed.
func (s *Source) Run(ctx context.Context) {
	if s.acct.AppOnly() {
		return // nothing to keep alive: tokens are fetched on demand
	}
	for {
		changed := s.health.Changed()
		st := s.tokenState()
		wait := s.nextKeepAlive()
		probing := st == health.StateDegraded || st == health.StateDisconnected
		if probing {
			wait = max(s.nextProbe().Sub(s.opts.Now()), 0)
		}
		if s.isUnsaved() {
			wait = min(wait, s.opts.SaveRetry)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-s.installed():
			t.Stop()
			continue
		case <-changed:
			// The condition changed (a failure began an outage): the
			// next probe is due relative to when it began.
			t.Stop()
			continue
		case <-t.C:
		}
		s.saveUnsaved()
		st = s.tokenState()
		if st == health.StateNeedsReauth || st == health.StateNeedsAdmin {
			continue // waits for installed()
		}
		probing = st == health.StateDegraded || st == health.StateDisconnected
		now := s.opts.Now()
		s.mu.Lock()
		due := s.grant != nil && (probing && !now.Before(s.nextProbeLocked()) ||
			!probing && now.Sub(s.grant.RefreshedAt) >= s.opts.KeepAlive)
		stale := ""
		if s.grant != nil {
			stale = s.grant.AccessToken
		}
		if due && probing {
			s.probes++
			s.lastProbe = now
		}
		s.mu.Unlock()
		if due {
			s.Refresh(ctx, stale)
		}
	}
}

func (s *Source) isUnsaved() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unsaved
}

// nextProbe is when Run probes the token endpoint next during an outage:
// the budget's probes spaced RetryWindow/RetryBudget from its start, then
// one every SlowProbe.
func (s *Source) nextProbe() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextProbeLocked()
}

func (s *Source) nextProbeLocked() time.Time {
	if s.probes >= s.opts.RetryBudget {
		return s.lastProbe.Add(s.opts.SlowProbe)
	}
	since := s.downSince
	if since.IsZero() {
		since = s.opts.Now()
	}
	return since.Add(time.Duration(s.probes+1) * s.opts.RetryWindow / time.Duration(s.opts.RetryBudget))
}

// nextKeepAlive is how long until the grant should be refreshed to stay
// alive.
func (s *Source) nextKeepAlive() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.grant == nil {
		return s.opts.KeepAlive
	}
	return max(s.grant.RefreshedAt.Add(s.opts.KeepAlive).Sub(s.opts.Now()), time.Second)
}

// installed returns a channel closed at the next Install.
func (s *Source) installed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.installCh == nil {
		s.installCh = make(chan struct{})
	}
	return s.installCh
}

// Wait waits until the token requests running now have ended, their
// outcomes stored, or ctx ends: a shutdown must not cut short a refresh
// whose rotated refresh token is not stored yet.
func (s *Source) Wait(ctx context.Context) error {
	done := make(chan struct{})
	go func() { s.refreshing.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Account returns the account the source serves.
func (s *Source) Account() *config.Account { return s.acct }

// Token returns a valid access token for IMAP, POP3 and SMTP, refreshing
// first when the cached one has less than RefreshMargin left. Errors are
// *health.Error.
func (s *Source) Token(ctx context.Context) (string, error) {
	return s.token(ctx, ResourceMail, "")
}

// Refresh gets a new access token because an upstream rejected stale. When
// another caller has already replaced stale, its token is returned without
// a new refresh.
func (s *Source) Refresh(ctx context.Context, stale string) (string, error) {
	return s.token(ctx, ResourceMail, stale)
}

// TokenFor is Token for resource r. A failure to get a Graph token is
// reported as the account's health.SourceGraph condition, so that the IMAP
// side of the account keeps working when only Graph is refused (a missing
// Mail.Send consent).
func (s *Source) TokenFor(ctx context.Context, r Resource) (string, error) {
	return s.token(ctx, r, "")
}

// RefreshFor is Refresh for resource r.
func (s *Source) RefreshFor(ctx context.Context, r Resource, stale string) (string, error) {
	return s.token(ctx, r, stale)
}

// RefreshAhead fetches the mail access token before a login would have to
// wait for it: when the cached token has less than the refresh margin
// plus ahead left (or there is none), it starts a refresh in the
// background, or joins the one running, and returns a channel closed when
// that refresh ended. Otherwise done is nil and at is when to call again.
// Nothing starts while the token endpoint is failing (Run probes it then)
// or the grant needs a person. The warm connection pools call it, with
// ahead covering a warm connection's lifetime, so that the login that
// takes one pays only the AUTHENTICATE round trip.
func (s *Source) RefreshAhead(ahead time.Duration) (done <-chan struct{}, at time.Time) {
	if st := s.tokenState(); st != health.StateOK && st != health.StateWarning {
		return nil, time.Time{}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	window := s.opts.RefreshMargin + ahead
	if tok, exp := s.cached(ResourceMail); tok != "" && exp.Sub(s.opts.Now()) > window {
		return nil, exp.Add(-window)
	}
	if s.grant == nil && !s.acct.AppOnly() {
		return nil, time.Time{} // nothing to refresh until a grant is installed
	}
	call := s.inflight[ResourceMail]
	if call == nil {
		call = &refreshCall{done: make(chan struct{})}
		s.inflight[ResourceMail] = call
		s.refreshing.Add(1)
		go s.refresh(call, ResourceMail)
	}
	return call.done, time.Time{}
}

// cached returns resource r's access token and its expiry. s.mu is held.
func (s *Source) cached(r Resource) (string, time.Time) {
	if s.grant == nil {
		return "", time.Time{}
	}
	if r == ResourceGraph {
		return s.grant.GraphAccessToken, s.grant.GraphExpiry
	}
	return s.grant.AccessToken, s.grant.Expiry
}

// dropGraphToken forgets the Graph access token. s.mu is held.
func (s *Source) dropGraphToken() {
	if s.grant != nil && s.grant.GraphAccessToken != "" {
		g := *s.grant
		g.GraphAccessToken, g.GraphExpiry = "", time.Time{}
		s.grant = &g
	}
}

func (s *Source) token(ctx context.Context, r Resource, stale string) (string, error) {
	s.mu.Lock()
	if s.grant == nil && s.undecryptable != nil {
		he := s.undecryptable
		s.mu.Unlock()
		return "", he
	}
	if now := s.opts.Now(); s.unsaved && now.Sub(s.saveTried) >= 5*time.Second {
		// A grant that could not be stored: each use tries again (at
		// most every 5 s, off the caller's path), besides Run's timer.
		s.saveTried = now
		s.refreshing.Add(1)
		go func() {
			defer s.refreshing.Done()
			s.saveUnsaved()
		}()
	}
	if tok, exp := s.cached(r); tok != "" && tok != stale && exp.Sub(s.opts.Now()) > s.opts.RefreshMargin {
		s.mu.Unlock()
		return tok, nil
	}
	call := s.inflight[r]
	if call == nil {
		call = &refreshCall{done: make(chan struct{})}
		s.inflight[r] = call
		s.refreshing.Add(1)
		go s.refresh(call, r)
	}
	s.mu.Unlock()
	select {
	case <-call.done:
		return call.token, call.err
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// refresh runs one request to the token endpoint for resource r. It does
// not use the caller's context, so a client that hangs up does not waste a
// refresh whose rotated refresh token must be stored anyway. Requests of
// the account run one at a time, each until its outcome is stored
// (fetchMu), so that the next starts from the refresh token this one
// rotated; an answer for a grant that Install replaced meanwhile is
// dropped, and the request made again for the new grant.
func (s *Source) refresh(call *refreshCall, r Resource) {
	defer s.refreshing.Done()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.opts.HTTPClient)
	s.fetchMu.Lock()
	defer s.fetchMu.Unlock()
	var (
		tok *oauth2.Token
		err error
	)
	for try := 0; ; try++ {
		s.mu.Lock()
		gen, old := s.gen, s.grant
		s.mu.Unlock()
		tok, err = s.safeFetch(ctx, old, r)
		s.mu.Lock()
		if s.gen == gen || try == 2 {
			break // s.mu stays locked for the outcome
		}
		// A new grant was installed while this request ran: its answer
		// belongs to the old grant.
		if t, _ := s.cached(r); t != "" {
			call.token = t
			s.inflight[r] = nil
			s.mu.Unlock()
			close(call.done)
			return
		}
		s.mu.Unlock()
	}
	now := s.opts.Now()

	var report func()
	defer func() {
		s.inflight[r] = nil
		s.mu.Unlock()
		if report != nil {
			report() // outside s.mu: health logs
		}
		close(call.done)
	}()
	if err != nil {
		he := s.fail(err, r)
		call.err = he
		src := health.SourceToken
		if r == ResourceGraph {
			src = health.SourceGraph
		}
		report = func() { s.health.Fail(src, he) }
		return
	}
	s.scope[r], _ = tok.Extra("scope").(string)
	if r == ResourceGraph {
		g := &Grant{ClientID: s.acct.ClientID, GrantedAt: now} // app-only: nothing stored before
		if s.grant != nil {
			*g = *s.grant
		}
		g.GraphAccessToken, g.GraphExpiry, g.RefreshedAt = tok.AccessToken, tok.Expiry, now
		if tok.RefreshToken != "" {
			g.RefreshToken = tok.RefreshToken
		}
		s.stored(s.opts.Store.Save(s.acct.Name, g))
		s.grant = g
		call.token = tok.AccessToken
		f := s.forecast() // the grant was used: its idle lifetime starts again
		report = func() { s.health.SetForecast(f) }
		return
	}
	g := &Grant{ClientID: s.acct.ClientID, GrantedAt: now}
	if s.grant != nil {
		*g = *s.grant // the current grant: another resource's token stays
	}
	g.AccessToken = tok.AccessToken
	g.Expiry = tok.Expiry
	g.RefreshedAt = now
	if tok.RefreshToken != "" {
		g.RefreshToken = tok.RefreshToken
	}
	// The rotated refresh token may be the only one that works now:
	// when it cannot be kept, the token is used all the same and Run
	// tries to store it again.
	s.stored(s.opts.Store.Save(s.acct.Name, g))
	s.grant = g
	s.probes, s.downSince = 0, time.Time{}
	f := s.forecast()
	report = func() {
		s.health.SetForecast(f)
		s.health.Succeed(health.SourceToken)
	}
	call.token = g.AccessToken
}

// stored records the outcome of storing a refreshed grant. s.mu is held.
func (s *Source) stored(err error) {
	if err != nil {
		s.log.Error("could not store the refreshed grant: relayd uses it and tries to store it again every "+s.opts.SaveRetry.String()+
			"; until then, after a restart the account needs 'relayd authorize'. Free space or make state_dir writable", "err", err)
		s.unsaved = true
		return
	}
	if s.unsaved {
		s.log.Info("the refreshed grant is stored now")
	}
	s.unsaved = false
}

// saveUnsaved stores the grant in memory if a refresh could not.
func (s *Source) saveUnsaved() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.unsaved || s.grant == nil {
		return
	}
	s.saveTried = s.opts.Now()
	if err := s.opts.Store.Save(s.acct.Name, s.grant); err != nil {
		s.log.Debug("the refreshed grant still cannot be stored", "err", err)
		return
	}
	s.stored(nil)
}

// safeFetch is fetch, with a panic in it (the OAuth library, a provider's
// odd answer) turned into a transient error that is logged and counted.
func (s *Source) safeFetch(ctx context.Context, old *Grant, r Resource) (tok *oauth2.Token, err error) {
	defer func() {
		if v := recover(); v != nil {
			health.Recovered(s.log, s.health, "refreshing the token", v)
			tok, err = nil, fmt.Errorf("internal error while refreshing the token: %v", v)
		}
	}()
	fault.Hit("refresh")
	return s.fetch(ctx, old, r)
}

// fetch asks the token endpoint for an access token for resource r.
func (s *Source) fetch(ctx context.Context, old *Grant, r Resource) (*oauth2.Token, error) {
	a := s.acct
	oc := OAuthConfig(a, s.secret)
	scopes := a.Scopes
	if r == ResourceGraph {
		scopes = a.GraphScopes
	}
	switch {
	case s.serviceAccount != nil:
		return fetchServiceAccount(ctx, a, s.serviceAccount)
	case s.cert != nil:
		return fetchWithCertificate(ctx, a, s.cert, scopes, s.opts.Now())
	case a.Grant == config.GrantClientCredentials:
		cc := clientcredentials.Config{
			ClientID: a.ClientID, ClientSecret: s.secret, TokenURL: a.TokenURL,
			Scopes: scopes, AuthStyle: oc.Endpoint.AuthStyle,
		}
		return cc.Token(ctx)
	}
	if old == nil || old.RefreshToken == "" {
		return nil, errNoGrant
	}
	if r == ResourceMail {
		return oc.TokenSource(ctx, &oauth2.Token{RefreshToken: old.RefreshToken}).Token()
	}
	// x/oauth2 sends no scope with a refresh, and the token endpoint then
	// answers for the grant's first resource. Another resource's token
	// names its scopes: the same request, through the client credentials
	// flow's documented grant_type override.
	cc := clientcredentials.Config{
		ClientID: a.ClientID, ClientSecret: s.secret, TokenURL: a.TokenURL,
		Scopes: scopes, AuthStyle: oc.Endpoint.AuthStyle,
		EndpointParams: url.Values{"grant_type": {"refresh_token"}, "refresh_token": {old.RefreshToken}},
	}
	return cc.Token(ctx)
}

var errNoGrant = errors.New("no grant stored")

// fail classifies a refresh failure. A transient one keeps the account
// degraded until RetryBudget scheduled probes failed, then disconnected.
// A sign-in frequency policy's lifetime is learned for the forecast. s.mu
// is held.
func (s *Source) fail(err error, r Resource) *health.Error {
	he := Classify(s.acct, err)
	if r == ResourceGraph {
		return s.failGraph(he)
	}
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		if d := provider.SignInFrequency(string(re.Body)); d > 0 && s.grant != nil {
			g := *s.grant
			g.SignInFrequency = d
			s.grant = &g
			s.opts.Store.Update(s.acct.Name, func(old *Grant) (*Grant, error) {
				if old == nil {
					return nil, errNoGrant
				}
				old.SignInFrequency = d
				return old, nil
			})
			he.Advice += fmt.Sprintf("; the tenant's sign-in frequency policy lets a grant live %s, so this recurs every %s: relayd warns ahead", d, d)
		}
	}
	switch {
	case he.State == health.StateDegraded:
		now := s.opts.Now()
		if s.downSince.IsZero() {
			s.downSince = now
		}
		if s.probes >= s.opts.RetryBudget {
			he.State = health.StateDisconnected
			he.Advice = fmt.Sprintf("the token endpoint %s has failed since %s: %d probes over %s did not get an answer (last: %s); relayd keeps trying every %s, and the mailbox and its held mail come back by themselves when it answers",
				hostOf(s.acct.TokenURL), s.downSince.UTC().Format(time.RFC3339), s.probes, s.opts.RetryWindow, he.Detail(), s.opts.SlowProbe)
		}
	default:
		s.dropAccessToken()
	}
	s.log.Warn("token refresh failed", "state", he.State, "reason", he.Reason, "err", he.Detail())
	return he
}

// forecast predicts when the grant ends: the provider's inactivity limit
// after its last refresh, 7 days after consent for a Google app in
// Testing, a sign-in frequency policy learned from AADSTS70043, or
// max_grant_age; the earliest wins. s.mu is held.
func (s *Source) forecast() health.Forecast {
	g, a := s.grant, s.acct
	var f health.Forecast
	if g == nil || a.AppOnly() {
		return f
	}
	consider := func(at time.Time, why string) {
		if !at.IsZero() && (f.At.IsZero() || at.Before(f.At)) {
			f = health.Forecast{At: at, Why: why}
		}
	}
	if a.IdleLifetime > 0 && !g.RefreshedAt.IsZero() {
		consider(g.RefreshedAt.Add(a.IdleLifetime), fmt.Sprintf("%d days without use", a.IdleLifetime/(24*time.Hour)))
	}
	if g.GrantedAt.IsZero() {
		return f
	}
	if a.TestingApp && a.TestingLifetime > 0 {
		consider(g.GrantedAt.Add(a.TestingLifetime), fmt.Sprintf("an app in Testing keeps grants %d days: publish it to lift that", a.TestingLifetime/(24*time.Hour)))
	}
	if g.SignInFrequency > 0 {
		consider(g.GrantedAt.Add(g.SignInFrequency), fmt.Sprintf("the tenant's sign-in frequency policy (%s)", g.SignInFrequency))
	}
	if a.MaxGrantAge > 0 {
		consider(g.GrantedAt.Add(a.MaxGrantAge), fmt.Sprintf("max_grant_age %s", a.MaxGrantAge))
	}
	return f
}

// tokenState is the state of the token endpoint's last answer.
func (s *Source) tokenState() health.State {
	if e := s.health.Condition(health.SourceToken); e != nil {
		return e.State
	}
	return health.StateOK
}

// Install makes g the account's grant, persisting it first. It replaces
// every cached access token, and a refresh that is running while Install
// is called does not overwrite g. The account's conditions are cleared:
// held mail is released.
func (s *Source) Install(g *Grant) error {
	if err := s.opts.Store.Replace(s.acct.Name, g); err != nil {
		return err
	}
	s.mu.Lock()
	s.undecryptable = nil
	s.unsaved = false // g is stored
	if g.SignInFrequency == 0 && s.grant != nil {
		g.SignInFrequency = s.grant.SignInFrequency // the tenant's policy still holds
	}
	s.grant = g
	s.gen++
	s.probes, s.downSince = 0, time.Time{}
	if s.installCh != nil {
		close(s.installCh)
		s.installCh = nil
	}
	f := s.forecast()
	s.mu.Unlock()
	s.log.Info("new grant installed")
	s.health.SetForecast(f)
	s.health.Reset()
	return nil
}

// ErrGrantRefused wraps the reason a handed-over grant was not installed.
var ErrGrantRefused = errors.New("grant refused")

// Adopt checks a grant handed over by relayd authorize and installs it. One
// refresh proves that its refresh token works for this client; the ID token
// (the sign-in's, else the one the refresh returns) must name the
// account's login. A grant that fails either check is refused, wrapping
// ErrGrantRefused with the reason: the current grant stays in force and the
// account's condition does not change. Nothing is reported to its health
// until the new grant is installed.
func (s *Source) Adopt(ctx context.Context, g *Grant) error {
	a := s.acct
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("account %q: %w: %s; the current grant stays in force", a.Name, ErrGrantRefused, fmt.Sprintf(format, args...))
	}
	if a.AppOnly() {
		return refuse("the account uses app-only credentials (%s) and takes no grant", a.Grant)
	}
	if g == nil || g.RefreshToken == "" {
		return refuse("it has no refresh token")
	}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, s.opts.HTTPClient)
	tok, err := OAuthConfig(a, s.secret).TokenSource(ctx, &oauth2.Token{RefreshToken: g.RefreshToken}).Token()
	if err != nil {
		return refuse("its refresh token does not work (%s)", Describe(err))
	}
	raw := g.IDToken
	if raw == "" {
		raw, _ = tok.Extra("id_token").(string)
	}
	who := ""
	switch {
	case raw != "" && a.Issuer != "":
		if who, err = CheckIdentity(ctx, a, s.opts.HTTPClient, raw, ""); err != nil {
			return refuse("%v", err)
		}
	case g.IDToken != "":
		return refuse("it carries an ID token, but no issuer is configured to check it: set issuer")
	}
	now := s.opts.Now()
	ng := &Grant{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		ClientID: a.ClientID, GrantedAt: g.GrantedAt, RefreshedAt: now, Subject: who}
	if ng.RefreshToken == "" {
		ng.RefreshToken = g.RefreshToken
	}
	if ng.GrantedAt.IsZero() {
		ng.GrantedAt = now
	}
	return s.Install(ng)
}

// TokenStatus is what status shows of an account's grant.
type TokenStatus struct {
	AccessTokenExpiry time.Time `json:"access_token_expiry,omitzero"`
	LastRefresh       time.Time `json:"last_refresh,omitzero"`
	GrantedAt         time.Time `json:"granted_at,omitzero"`
}

// Status reports the account's grant.
func (s *Source) Status() TokenStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var st TokenStatus
	if g := s.grant; g != nil {
		st.AccessTokenExpiry = g.Expiry
		st.LastRefresh = g.RefreshedAt
		st.GrantedAt = g.GrantedAt
	}
	return st
}

// Health is the account's condition.
func (s *Source) Health() *health.Account { return s.health }

// Forget forgets the access token an upstream server refused although
// freshly refreshed (Graph's when src is health.SourceGraph), so that
// nothing uses it while the account waits for a new grant. Package
// upstream reports the refusal to the health of the account that logged
// in (doctor's logins report to a throwaway one).
func (s *Source) Forget(src health.Source) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if src == health.SourceGraph {
		s.dropGraphToken()
	} else {
		s.dropAccessToken()
	}
}

// dropAccessToken forgets the cached access token of a grant that is dead
// or refused: nothing may use it while the account waits for a new grant.
// s.mu is held.
func (s *Source) dropAccessToken() {
	if s.grant != nil && s.grant.AccessToken != "" {
		g := *s.grant
		g.AccessToken, g.Expiry = "", time.Time{}
		s.grant = &g
	}
}

func hostOf(u string) string {
	u = strings.TrimPrefix(strings.TrimPrefix(u, "https://"), "http://")
	if i := strings.IndexByte(u, '/'); i >= 0 {
		u = u[:i]
	}
	return u
}

// failGraph completes the classification of a failure to get a Graph
// token: a missing consent names the permission Graph needs and the two
// ways to grant it. s.mu is held.
func (s *Source) failGraph(he *health.Error) *health.Error {
	if he.Reason == health.ReasonConsentMissing {
		he.Advice = fmt.Sprintf("the app registration %s has no consent for Microsoft Graph's Mail.Send, which transport = \"graph\" needs: "+
			"grant admin consent for Mail.Send (Entra admin center → App registrations → API permissions → Grant admin consent), "+
			"then run 'relayd queue release %s'; or run 'relayd authorize --browser %s' so that the sign-in asks for it; or set transport = \"smtp\"", s.acct.ClientID, s.acct.Name, s.acct.Name)
	}
	if !he.Temporary() {
		s.dropGraphToken()
	}
	s.log.Warn("Microsoft Graph token request failed", "state", he.State, "reason", he.Reason, "err", he.Detail())
	return he
}
