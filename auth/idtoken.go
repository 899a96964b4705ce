package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coreos/go-oidc/v3/oidc"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/safetext"
)

// WrongAccountError is a grant for someone other than the account's login:
// nothing is stored.
type WrongAccountError struct {
	Account, SignedIn, Expected string
}

func (e *WrongAccountError) Error() string {
	return fmt.Sprintf("account %q: the sign-in was as %s, but the account's login is %s; nothing was stored. "+
		"Sign out of %s in that browser (or open the sign-in page in a private window), sign in as %s, and run 'relayd authorize %s' again",
		e.Account, e.SignedIn, e.Expected, e.SignedIn, e.Expected, e.Account)
}

// CheckIdentity verifies an ID token (OpenID Connect Core §3.1.3.7: its
// signature against the keys the issuer's discovery document names, issuer,
// audience, expiry, and nonce when one was sent) and that it names the
// account's login. It returns who signed in. The identity is any of
// preferred_username, email and upn, compared without case: Microsoft's UPN
// is often not the mail address. A shared mailbox is the normal case: login
// is the delegate who signs in, not the mailbox.
//
// Microsoft's multi-tenant discovery documents (organizations, common,
// consumers) name "{tenantid}" in the issuer: the token's tid claim fills
// it, and the token's iss must then match.
func CheckIdentity(ctx context.Context, a *config.Account, hc *http.Client, raw, nonce string) (string, error) {
	if a.Issuer == "" {
		return "", fmt.Errorf("account %q: no issuer is configured to check who signed in: set issuer", a.Name)
	}
	if hc != nil {
		ctx = oidc.ClientContext(ctx, hc)
	}
	// Discovery may name another issuer (Microsoft's per-tenant one); it
	// is checked below against the token.
	prov, err := oidc.NewProvider(oidc.InsecureIssuerURLContext(ctx, a.Issuer), a.Issuer)
	if ue := Unreachable(a, err); ue != nil {
		return "", fmt.Errorf("account %q: reading the OpenID configuration to check who signed in: %w", a.Name, ue)
	}
	if err != nil {
		return "", fmt.Errorf("account %q: reading the OpenID configuration of %s: %w", a.Name, a.Issuer, err)
	}
	var disc struct {
		Issuer string `json:"issuer"`
	}
	if err := prov.Claims(&disc); err != nil || disc.Issuer == "" {
		return "", fmt.Errorf("account %q: the OpenID configuration of %s names no issuer", a.Name, a.Issuer)
	}
	tok, err := prov.Verifier(&oidc.Config{ClientID: a.ClientID, SkipIssuerCheck: true}).Verify(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("account %q: the ID token from the sign-in is not valid: %w", a.Name, err)
	}
	var c struct {
		PreferredUsername string `json:"preferred_username"`
		Email             string `json:"email"`
		UPN               string `json:"upn"`
		TenantID          string `json:"tid"`
	}
	if err := tok.Claims(&c); err != nil {
		return "", fmt.Errorf("account %q: the ID token's claims: %w", a.Name, err)
	}
	want := disc.Issuer
	if strings.Contains(want, "{tenantid}") {
		if c.TenantID == "" {
			return "", fmt.Errorf("account %q: the ID token has no tenant (tid) to check its issuer against", a.Name)
		}
		want = strings.ReplaceAll(want, "{tenantid}", c.TenantID)
	}
	if tok.Issuer != want {
		return "", fmt.Errorf("account %q: the ID token was issued by %s, not %s", a.Name, safetext.Line(tok.Issuer), safetext.Line(want))
	}
	if nonce != "" && tok.Nonce != nonce {
		return "", errors.New("the ID token does not answer this sign-in (nonce mismatch); run the sign-in again")
	}
	var names []string
	for _, n := range []string{c.PreferredUsername, c.Email, c.UPN} {
		if n == "" {
			continue
		}
		if strings.EqualFold(n, a.Login) {
			return n, nil
		}
		names = append(names, safetext.Line(n)) // the IdP's text, shown on a terminal
	}
	if len(names) == 0 {
		return "", fmt.Errorf("account %q: the ID token names nobody (no preferred_username, email or upn): the email and profile scopes may be missing", a.Name)
	}
	return "", &WrongAccountError{Account: a.Name, SignedIn: names[0], Expected: a.Login}
}
