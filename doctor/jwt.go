package doctor

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
)

// Permissions are what an access token that is a JWT says it allows:
// Microsoft Entra puts delegated permissions in "scp" (space-separated)
// and an app's in "roles".
type Permissions struct {
	Scopes []string // scp
	Roles  []string // roles
	// Audience is the token's "aud": the resource it is for.
	Audience string
}

// Has reports whether p holds permission name (case-insensitively), as a
// delegated scope or an app role.
func (p Permissions) Has(name string) bool {
	for _, l := range [][]string{p.Scopes, p.Roles} {
		for _, s := range l {
			if strings.EqualFold(s, name) {
				return true
			}
		}
	}
	return false
}

// ErrNotJWT is returned for an access token that is not a JWT: some
// providers' tokens are opaque, and their permissions cannot be read.
var ErrNotJWT = errors.New("the access token is not a JWT")

// ReadPermissions decodes the payload of the JWT token (RFC 7519 §3, the
// second of its three base64url parts) without verifying its signature,
// which is the resource's business, not relayd's: it only reads what the
// token claims to allow. token is never part of an error.
func ReadPermissions(token string) (Permissions, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return Permissions{}, ErrNotJWT
	}
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return Permissions{}, ErrNotJWT
	}
	var claims struct {
		Scp   string          `json:"scp"`
		Roles []string        `json:"roles"`
		Aud   json.RawMessage `json:"aud"`
	}
	if err := json.Unmarshal(b, &claims); err != nil {
		return Permissions{}, ErrNotJWT
	}
	p := Permissions{Scopes: strings.Fields(claims.Scp), Roles: claims.Roles}
	var aud string
	if json.Unmarshal(claims.Aud, &aud) == nil {
		p.Audience = aud
	}
	return p, nil
}
