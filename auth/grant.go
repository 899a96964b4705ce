package auth

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"golang.org/x/oauth2"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
)

// ImportRefreshToken validates a refresh token obtained elsewhere (another
// tool, an earlier installation) with one refresh, and returns the grant to
// store. The account must use the client id the token was issued to.
func ImportRefreshToken(ctx context.Context, a *config.Account, hc *http.Client, refreshToken string) (*Grant, error) {
	secret := ""
	if a.ClientSecretFile != "" {
		var err error
		if secret, err = ReadSecretFile(a.ClientSecretFile); err != nil {
			return nil, fmt.Errorf("account %q: client_secret_file: %w", a.Name, err)
		}
	}
	if hc != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	}
	style := oauth2.AuthStyleAutoDetect
	if a.TokenAuthInParams {
		style = oauth2.AuthStyleInParams
	}
	oc := oauth2.Config{
		ClientID: a.ClientID, ClientSecret: secret, Scopes: a.Scopes,
		Endpoint: oauth2.Endpoint{TokenURL: a.TokenURL, AuthStyle: style},
	}
	tok, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		he := Classify(a, err)
		advice := he.Advice
		if he.State == health.StateNeedsReauth {
			advice = fmt.Sprintf("the refresh token was rejected: it is expired or revoked, or was issued to another client id than %s", a.ClientID)
		}
		return nil, fmt.Errorf("account %q: %s (%s)", a.Name, advice, describe(err))
	}
	now := time.Now()
	g := &Grant{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		ClientID: a.ClientID, GrantedAt: now, RefreshedAt: now,
	}
	if g.RefreshToken == "" {
		g.RefreshToken = refreshToken
	}
	return g, nil
}
