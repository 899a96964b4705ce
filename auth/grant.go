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

// OAuthConfig is the account's OAuth 2.0 client, with secret as its client
// secret ("" for a public client). The token endpoint's client
// authentication is set explicitly: x/oauth2's auto-detection repeats a
// failed token request in the other style, so that a spent code comes back
// as "already redeemed" and hides the first error. Public clients send their
// id in the body (RFC 6749 §2.3.1), confidential ones use HTTP Basic, unless
// the provider wants the body (Microsoft).
func OAuthConfig(a *config.Account, secret string) *oauth2.Config {
	style := oauth2.AuthStyleInHeader
	if a.TokenAuthInParams || secret == "" {
		style = oauth2.AuthStyleInParams
	}
	return &oauth2.Config{
		ClientID: a.ClientID, ClientSecret: secret, Scopes: a.Scopes,
		Endpoint: oauth2.Endpoint{AuthURL: a.AuthURL, TokenURL: a.TokenURL, DeviceAuthURL: a.DeviceAuthURL, AuthStyle: style},
	}
}

// ClientSecret reads the account's client_secret_file, if it has one, and
// returns "" if it has none. The error names the account and the key, never
// the secret.
func ClientSecret(a *config.Account) (string, error) {
	if a.ClientSecretFile == "" {
		return "", nil
	}
	secret, err := ReadSecretFile(a.ClientSecretFile)
	if err != nil {
		return "", fmt.Errorf("account %q: client_secret_file: %w", a.Name, err)
	}
	return secret, nil
}

// ImportRefreshToken validates a refresh token obtained elsewhere (another
// tool, an earlier installation) with one refresh, and returns the grant to
// store. The account must use the client id the token was issued to.
func ImportRefreshToken(ctx context.Context, a *config.Account, hc *http.Client, refreshToken string) (*Grant, error) {
	secret, err := ClientSecret(a)
	if err != nil {
		return nil, err
	}
	if hc != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	}
	oc := OAuthConfig(a, secret)
	tok, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		if ue := Unreachable(a, err); ue != nil {
			return nil, fmt.Errorf("account %q: %w; nothing was stored", a.Name, ue)
		}
		he := Classify(a, err)
		advice := he.Advice
		if he.State == health.StateNeedsReauth {
			advice = fmt.Sprintf("the refresh token was rejected: it is expired or revoked, or was issued to another client id than %s", a.ClientID)
		}
		return nil, fmt.Errorf("account %q: %s (%s)", a.Name, advice, Describe(err))
	}
	who := ""
	if raw, _ := tok.Extra("id_token").(string); raw != "" && a.Issuer != "" {
		// The refresh answered with who holds the grant: it must be the
		// account's login, as after an interactive sign-in.
		if who, err = CheckIdentity(ctx, a, hc, raw, ""); err != nil {
			return nil, err
		}
	}
	now := time.Now()
	g := &Grant{Subject: who,
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		ClientID: a.ClientID, GrantedAt: now, RefreshedAt: now,
	}
	if g.RefreshToken == "" {
		g.RefreshToken = refreshToken
	}
	return g, nil
}
