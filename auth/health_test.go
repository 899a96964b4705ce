package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/oauth2"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// runSource starts src.Run in the bubble and stops it when the test ends.
func runSource(t *testing.T, src *Source) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { src.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// failRefresh makes the source try a refresh now, as a login whose
// upstream refused the cached token would.
func failRefresh(src *Source) {
	src.mu.Lock()
	stale := src.grant.AccessToken
	src.mu.Unlock()
	src.Refresh(context.Background(), stale)
}

// An IdP outage shorter than the retry budget keeps the account degraded,
// and it recovers by itself; logins' refreshes do not spend the budget.
// stateAfter lets d pass in the synctest bubble, waits for what it set
// off, and returns the account's state.
func stateAfter(src *Source, d time.Duration) health.State {
	time.Sleep(d)
	synctest.Wait()
	return src.Health().State()
}

func TestOutageShorterThanBudget(t *testing.T) {
	idp := newIdP(t)
	synctest.Test(t, func(t *testing.T) {
		src, _ := newSource(t, idp, SourceOptions{HTTPClient: idp.Client()})
		runSource(t, src)
		idp.SetDown(true)
		failRefresh(src)
		for range 50 { // logins during the outage
			failRefresh(src)
		}
		// 10 minutes: 6 probes of the budget's 8
		if st := stateAfter(src, 10*time.Minute); st != health.StateDegraded {
			t.Fatalf("after 10 minutes of outage: %s, want degraded", st)
		}
		idp.SetDown(false)
		if st := stateAfter(src, 2*time.Minute); st != health.StateOK {
			t.Errorf("after the IdP came back: %s, want ok", st)
		}
	})
}

// A longer outage turns the account disconnected after the budget (8
// probes over 12 minutes); probing goes on, and when the IdP answers again
// the account is ok by itself, without a new grant.
func TestOutageLongerThanBudgetRecoversByItself(t *testing.T) {
	idp := newIdP(t)
	synctest.Test(t, func(t *testing.T) {
		src, _ := newSource(t, idp, SourceOptions{HTTPClient: idp.Client()})
		runSource(t, src)
		idp.SetDown(true)
		failRefresh(src)
		if st := stateAfter(src, 11*time.Minute); st != health.StateDegraded {
			t.Fatalf("after 11 minutes: %s, want still degraded", st)
		}
		time.Sleep(2 * time.Minute)
		synctest.Wait()
		snap := src.Health().Snapshot()
		if snap.State != health.StateDisconnected || !snap.State.NeedsAttention() ||
			!strings.Contains(snap.Advice, "8 probes over 12m0s") || !strings.Contains(snap.Advice, "keeps trying") {
			t.Fatalf("after 13 minutes: %+v, want disconnected saying what was tried", snap)
		}
		// 2 more hours: still probing, still down
		if st := stateAfter(src, 2*time.Hour); st != health.StateDisconnected {
			t.Fatalf("after 2 hours: %s", st)
		}
		idp.SetDown(false)
		if st := stateAfter(src, 30*time.Minute); st != health.StateOK {
			t.Errorf("after the IdP came back: %s, want ok by itself", st)
		}
	})
}

// invalid_grant needs reauthorization at once, in words.
func TestInvalidGrantFlipsAtOnce(t *testing.T) {
	idp := newIdP(t)
	synctest.Test(t, func(t *testing.T) {
		src, _ := newSource(t, idp, SourceOptions{HTTPClient: idp.Client()})
		idp.Revoke("support@example.com")
		failRefresh(src)
		snap := src.Health().Snapshot()
		if snap.State != health.StateNeedsReauth || snap.Reason != "grant_expired_idle" ||
			!strings.Contains(snap.Advice, "90 days without use") {
			t.Errorf("after invalid_grant: %+v", snap)
		}
	})
}

// Each provider error maps to its state, reason and words.
func TestClassifyProviderErrors(t *testing.T) {
	a := &config.Account{Name: "support", TokenURL: "https://login.example.com/token"}
	google := &config.Account{Name: "gmail", Provider: "gmail", TestingApp: true}
	for _, tc := range []struct {
		acct   *config.Account
		code   string
		body   string
		status int
		state  health.State
		reason health.Reason
		words  string
	}{
		{a, "invalid_grant", "AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.", 400, health.StateNeedsReauth, "grant_expired_idle", "90 days without use"},
		{a, "invalid_grant", "AADSTS700082: The refresh token has expired due to inactivity.", 400, health.StateNeedsReauth, "grant_expired_idle", "90 days without use"},
		{a, "invalid_grant", "AADSTS50173: The provided grant has expired due to it being revoked, a fresh auth token is needed.", 400, health.StateNeedsReauth, "credentials_changed", "password changed"},
		{a, "invalid_grant", "AADSTS50076: Due to a configuration change made by your administrator, you must use multi-factor authentication.", 400, health.StateNeedsReauth, "mfa_required", "multi-factor"},
		{a, "invalid_grant", "AADSTS50079: The user is required to use multi-factor authentication.", 400, health.StateNeedsReauth, "mfa_required", "multi-factor"},
		{a, "invalid_grant", "AADSTS70043: ... the maximum allowed lifetime for this request is 43200.", 400, health.StateNeedsReauth, "signin_frequency", "sign-in frequency"},
		{a, "invalid_grant", "AADSTS65001: The user or administrator has not consented to use the application.", 400, health.StateNeedsAdmin, "consent_missing", "admin consent"},
		{a, "invalid_grant", "AADSTS53003: Access has been blocked by Conditional Access policies.", 400, health.StateNeedsAdmin, "conditional_access_blocked", "Conditional Access"},
		{a, "invalid_client", "AADSTS7000215: Invalid client secret provided.", 401, health.StateNeedsAdmin, "client_secret_invalid", "client_secret_file"},
		{a, "invalid_client", "AADSTS7000222: The provided client secret keys for app are expired.", 401, health.StateNeedsAdmin, "client_secret_expired", "new secret"},
		{google, "invalid_grant", "Token has been expired or revoked.", 400, health.StateNeedsReauth, "testing_app_expired", "Publish the app"},
		{a, "invalid_request", "AADSTS50194: Application 'x' is not configured as a multi-tenant application.", 400, health.StateNeedsAdmin, "tenant_required", "set tenant to the tenant id or domain"},
		{a, "unauthorized_client", "AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.", 400, health.StateNeedsAdmin, "client_unknown", "check client_id"},
		{a, "invalid_client", "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.", 401, health.StateNeedsAdmin, "public_client_disallowed", "Allow public client flows"},
		{google, "invalid_client", "Unauthorized", 401, health.StateNeedsAdmin, "client_rejected", "Desktop app"},
		{a, "", "", 503, health.StateDegraded, health.ReasonTokenEndpointFailed, "keeps retrying"},
		{a, "", "", 429, health.StateDegraded, health.ReasonTokenEndpointFailed, "keeps retrying"},
	} {
		re := &oauth2.RetrieveError{Response: &http.Response{StatusCode: tc.status}, ErrorCode: tc.code, ErrorDescription: tc.body,
			Body: []byte(`{"error":"` + tc.code + `","error_description":"` + tc.body + `"}`)}
		he := Classify(tc.acct, re)
		if he.State != tc.state || he.Reason != tc.reason || !strings.Contains(he.Advice, tc.words) {
			t.Errorf("%s %q: %s %s %q; want %s %s with %q", tc.code, tc.body, he.State, he.Reason, he.Advice, tc.state, tc.reason, tc.words)
		}
		if strings.Contains(he.Client, "secret") || strings.Contains(he.Client, "https://") {
			t.Errorf("client text %q carries configuration", he.Client)
		}
	}
	if he := Classify(a, errors.New("dial tcp: connection refused")); he.State != health.StateDegraded || he.Reason != health.ReasonTokenEndpointUnreachable {
		t.Errorf("network error: %+v", he)
	}
}

// The forecast (90 days after the last use here) raises the account to
// warning 10 days ahead, and a refresh moves it away again.
func TestForecastWarning(t *testing.T) {
	idp := newIdP(t)
	synctest.Test(t, func(t *testing.T) {
		a := testAccount(idp)
		a.IdleLifetime = 90 * 24 * time.Hour
		src, _ := newSource(t, idp, SourceOptions{Account: a, HTTPClient: idp.Client()})
		failRefresh(src) // a use: the grant is refreshed now
		h := src.Health()
		if snap := h.Snapshot(); snap.GrantExpires.IsZero() || snap.State != health.StateOK {
			t.Fatalf("after a refresh: %+v", snap)
		}
		time.Sleep(79 * 24 * time.Hour)
		h.Evaluate()
		if st := h.State(); st != health.StateOK {
			t.Fatalf("on day 79: %s, want ok", st)
		}
		time.Sleep(2 * 24 * time.Hour)
		h.Evaluate()
		snap := h.Snapshot()
		if snap.State != health.StateWarning || snap.Warning == "" || !strings.Contains(snap.Advice, "90 days without use") {
			t.Fatalf("on day 81: %+v, want warning", snap)
		}
		failRefresh(src)
		if st := h.State(); st != health.StateOK {
			t.Errorf("after a refresh: %s, want ok again", st)
		}
	})
}

// AADSTS70043 teaches the sign-in frequency policy's lifetime: the next
// grant's forecast is its consent plus that lifetime.
func TestSignInFrequencyShortensForecast(t *testing.T) {
	idp := newIdP(t)
	synctest.Test(t, func(t *testing.T) {
		a := testAccount(idp)
		a.IdleLifetime = 90 * 24 * time.Hour
		src, _ := newSource(t, idp, SourceOptions{Account: a, HTTPClient: idp.Client()})
		idp.EndGrantsBySignInFrequency("support@example.com", 12*time.Hour)
		failRefresh(src)
		snap := src.Health().Snapshot()
		if snap.State != health.StateNeedsReauth || snap.Reason != "signin_frequency" || !strings.Contains(snap.Advice, "recurs every 12h0m0s") {
			t.Fatalf("after AADSTS70043: %+v", snap)
		}
		idp.EndGrantsBySignInFrequency("support@example.com", 0)
		now := time.Now()
		if err := src.Install(&Grant{RefreshToken: idp.IssueRefreshToken("client", "support@example.com"), GrantedAt: now, RefreshedAt: now}); err != nil {
			t.Fatal(err)
		}
		snap = src.Health().Snapshot()
		if !snap.GrantExpires.Equal(now.Add(12*time.Hour)) || !strings.Contains(snap.GrantExpiresWhy, "sign-in frequency") {
			t.Errorf("forecast after the new grant: %s (%s), want in 12h", snap.GrantExpires, snap.GrantExpiresWhy)
		}
		if snap.State != health.StateWarning {
			t.Errorf("a grant ending in 12 hours: %s, want warning", snap.State)
		}
	})
}

var _ = testkit.UnusedHash
