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
	secret, err := clientSecret(a)
	if err != nil {
		return nil, err
	}
	if hc != nil {
		ctx = context.WithValue(ctx, oauth2.HTTPClient, hc)
	}
	oc := oauthConfig(a, secret)
	tok, err := oc.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		he := Classify(a, err)
		advice := he.Advice
		if he.State == health.StateNeedsReauth {
			advice = fmt.Sprintf("the refresh token was rejected: it is expired or revoked, or was issued to another client id than %s", a.ClientID)
		}
		return nil, fmt.Errorf("account %q: %s (%s)", a.Name, advice, describe(err))
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
