package auth

import (
	"context"
	"strings"
	"time"
)

// Checked is what one refresh made for relayd doctor learned. It holds an
// access token: never print or log it.
type Checked struct {
	// Token is the new access token of the resource checked.
	Token string
	// Expiry is when Token expires (zero when the endpoint did not say).
	Expiry time.Time
	// Scopes are those the token endpoint said it granted (RFC 6749
	// §5.1); nil when it did not say, which means those requested.
	Scopes []string
	// Rotated reports that the provider issued a new refresh token,
	// which the source stored as it does on every refresh.
	Rotated bool
}

// Check refreshes resource r's access token now, even when the cached one
// is still good, so that relayd doctor proves the grant refreshable
// through the one source that keeps it: a refresh already running is
// shared, and a rotated refresh token is stored as on every refresh.
// Errors are *health.Error, reported to the account's health as any
// refresh's.
func (s *Source) Check(ctx context.Context, r Resource) (Checked, error) {
	s.mu.Lock()
	stale, _ := s.cached(r)
	oldRT := ""
	if s.grant != nil {
		oldRT = s.grant.RefreshToken
	}
	s.mu.Unlock()
	tok, err := s.token(ctx, r, stale)
	if err != nil {
		return Checked{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c := Checked{Token: tok}
	if t, exp := s.cached(r); t == tok {
		c.Expiry = exp
	}
	if sc := s.scope[r]; sc != "" {
		c.Scopes = strings.Fields(sc)
	}
	c.Rotated = s.grant != nil && oldRT != "" && s.grant.RefreshToken != oldRT
	return c, nil
}
