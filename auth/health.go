package auth

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"

	"github.com/relayd/relayd/config"
)

// State is an account's health.
type State string

// Account states, as DESIGN.md "Accounts, tokens, health" defines them.
const (
	StateOK          State = "ok"
	StateDegraded    State = "degraded"     // transient failures, retrying
	StateNeedsReauth State = "needs_reauth" // relayd authorize NAME fixes it
	StateNeedsAdmin  State = "needs_admin"  // only a tenant admin fixes it
)

// TokenStatus is the token part of an account's status.
type TokenStatus struct {
	State             State     `json:"state"`
	Advice            string    `json:"advice,omitempty"`
	AccessTokenExpiry time.Time `json:"access_token_expiry,omitzero"`
	LastRefresh       time.Time `json:"last_refresh,omitzero"`
	GrantedAt         time.Time `json:"granted_at,omitzero"`
	LastSuccess       time.Time `json:"last_success,omitzero"`
	LastError         string    `json:"last_error,omitempty"`
	LastErrorAt       time.Time `json:"last_error_at,omitzero"`
}

type healthState struct {
	state     State
	advice    string
	lastOK    time.Time
	lastErr   string
	lastErrAt time.Time
	failures  int
}

func (h *healthState) set(st State, advice string) {
	h.state, h.advice = st, advice
}

func (h *healthState) succeed(now time.Time) {
	h.state, h.advice, h.failures, h.lastOK = StateOK, "", 0, now
}

func (h *healthState) fail(st State, advice, msg string, now time.Time) {
	h.state, h.advice, h.lastErr, h.lastErrAt = st, advice, msg, now
	h.failures++
}

// AccountError is an error that is a condition of the account, not of one
// connection: it names the account, its resulting state and what fixes it.
type AccountError struct {
	Account string
	State   State
	Advice  string
	Err     error
}

func (e *AccountError) Error() string {
	return fmt.Sprintf("account %q: %s: %v", e.Account, e.Advice, e.Err)
}

func (e *AccountError) Unwrap() error { return e.Err }

// Classify decides what a token-endpoint error means for the account and
// what fixes it. Unknown errors are transient (degraded): retrying is safe.
func Classify(a *config.Account, err error) (State, string) {
	reauth := fmt.Sprintf("the grant was rejected; run 'relayd authorize %s'", a.Name)
	if errors.Is(err, errNoGrant) {
		return StateNeedsReauth, fmt.Sprintf("no grant stored yet: run 'relayd authorize %s'", a.Name)
	}
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return StateDegraded, fmt.Sprintf("the token endpoint %s is unreachable; relayd keeps retrying", hostOf(a.TokenURL))
	}
	body := string(re.Body)
	switch {
	case strings.Contains(body, "AADSTS7000222"):
		return StateNeedsAdmin, "the client secret has expired (AADSTS7000222): an admin must create a new secret for the app registration and put it in client_secret_file"
	case strings.Contains(body, "AADSTS7000218"):
		return StateNeedsAdmin, "the app registration does not allow public client flows (AADSTS7000218): an admin must enable 'Allow public client flows' or configure client_secret_file"
	case strings.Contains(body, "AADSTS65001"):
		return StateNeedsAdmin, "the application has no consent for these permissions (AADSTS65001): an admin must grant consent, then run 'relayd authorize " + a.Name + "'"
	}
	switch re.ErrorCode {
	case "invalid_grant":
		return StateNeedsReauth, reauth
	case "invalid_client", "unauthorized_client":
		return StateNeedsAdmin, fmt.Sprintf("the token endpoint rejected client %s (%s): an admin must check client_id and client_secret_file", a.ClientID, re.ErrorCode)
	case "invalid_scope", "access_denied", "consent_required":
		return StateNeedsAdmin, fmt.Sprintf("the token endpoint refused the scopes (%s): an admin must grant the application its permissions", re.ErrorCode)
	}
	if re.Response != nil && re.Response.StatusCode >= 500 {
		return StateDegraded, fmt.Sprintf("the token endpoint %s failed (HTTP %d); relayd keeps retrying", hostOf(a.TokenURL), re.Response.StatusCode)
	}
	return StateNeedsReauth, reauth
}

// describe renders a token-endpoint error for logs and status without the
// raw response body, which is not ours to vet for secrets.
func describe(err error) string {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		s := "token endpoint said " + re.ErrorCode
		if re.ErrorCode == "" && re.Response != nil {
			s = fmt.Sprintf("token endpoint answered HTTP %d", re.Response.StatusCode)
		}
		if re.ErrorDescription != "" {
			d := re.ErrorDescription
			if i := strings.IndexAny(d, "\r\n"); i >= 0 {
				d = d[:i]
			}
			s += ": " + d
		}
		return s
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return fmt.Sprintf("%s %s: %v", ue.Op, ue.URL, ue.Err)
	}
	return err.Error()
}
