package auth

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/oauth2/jwt"

	"github.com/relayd/relayd/config"
)

// App-only grants need no person: Google service accounts with domain-wide
// delegation (RFC 7523 JWT bearer grant, impersonating the mailbox) and
// Microsoft client credentials signed with a certificate (RFC 7523 client
// assertion with the x5t#S256 header Entra wants). Tokens are fetched on
// demand; there is no refresh token to keep alive.

// serviceAccountKey is the part of a Google service account key file
// relayd uses.
type serviceAccountKey struct {
	Type         string `json:"type"`
	ClientEmail  string `json:"client_email"`
	PrivateKey   string `json:"private_key"`
	PrivateKeyID string `json:"private_key_id"`
	TokenURI     string `json:"token_uri"`
}

// loadServiceAccount reads and checks a service account key file.
func loadServiceAccount(a *config.Account) (*serviceAccountKey, error) {
	b, err := os.ReadFile(a.ServiceAccountFile)
	if err != nil {
		return nil, fmt.Errorf("account %q: service_account_file: %w", a.Name, err)
	}
	var k serviceAccountKey
	if err := json.Unmarshal(b, &k); err != nil || k.Type != "service_account" || k.ClientEmail == "" || k.PrivateKey == "" {
		return nil, fmt.Errorf("account %q: service_account_file %s is not a Google service account key (JSON with type \"service_account\", client_email and private_key)", a.Name, a.ServiceAccountFile)
	}
	return &k, nil
}

// fetchServiceAccount gets an access token for the mailbox (the JWT's sub)
// with the service account's key.
func fetchServiceAccount(ctx context.Context, a *config.Account, k *serviceAccountKey) (*oauth2.Token, error) {
	tokenURL := a.TokenURL
	if tokenURL == "" {
		tokenURL = k.TokenURI
	}
	c := &jwt.Config{Email: k.ClientEmail, PrivateKey: []byte(k.PrivateKey), PrivateKeyID: k.PrivateKeyID,
		Subject: a.Email, Scopes: a.Scopes, TokenURL: tokenURL}
	return c.TokenSource(ctx).Token()
}

// clientCertificate is a certificate and its key, for client assertions.
type clientCertificate struct {
	key        crypto.Signer
	thumbprint string // base64url SHA-256 of the DER certificate: x5t#S256
}

// loadClientCertificate reads client_certificate_file and its key (in
// client_key_file, or in the same file).
func loadClientCertificate(a *config.Account) (*clientCertificate, error) {
	certPEM, err := os.ReadFile(a.ClientCertificateFile)
	if err != nil {
		return nil, fmt.Errorf("account %q: client_certificate_file: %w", a.Name, err)
	}
	keyPEM := certPEM
	if a.ClientKeyFile != "" {
		if keyPEM, err = os.ReadFile(a.ClientKeyFile); err != nil {
			return nil, fmt.Errorf("account %q: client_key_file: %w", a.Name, err)
		}
	}
	var cert *x509.Certificate
	var key crypto.Signer
	for _, b := range [][]byte{certPEM, keyPEM} {
		for rest := b; ; {
			var blk *pem.Block
			blk, rest = pem.Decode(rest)
			if blk == nil {
				break
			}
			switch blk.Type {
			case "CERTIFICATE":
				if cert == nil {
					cert, _ = x509.ParseCertificate(blk.Bytes)
				}
			case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
				if key == nil {
					key = parseKey(blk)
				}
			}
		}
	}
	switch {
	case cert == nil:
		return nil, fmt.Errorf("account %q: client_certificate_file %s holds no PEM certificate", a.Name, a.ClientCertificateFile)
	case key == nil:
		return nil, fmt.Errorf("account %q: no PEM private key for the client certificate (put it in client_key_file)", a.Name)
	}
	sum := sha256.Sum256(cert.Raw)
	return &clientCertificate{key: key, thumbprint: base64.RawURLEncoding.EncodeToString(sum[:])}, nil
}

func parseKey(blk *pem.Block) crypto.Signer {
	if k, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err == nil {
		if s, ok := k.(crypto.Signer); ok {
			return s
		}
	}
	if k, err := x509.ParsePKCS1PrivateKey(blk.Bytes); err == nil {
		return k
	}
	if k, err := x509.ParseECPrivateKey(blk.Bytes); err == nil {
		return k
	}
	return nil
}

// assertion signs a client assertion for the token endpoint (RFC 7523
// §2.2; Microsoft's "certificate credentials"): iss and sub the client id,
// aud the token endpoint, valid 10 minutes.
func (c *clientCertificate) assertion(clientID, tokenURL string, now time.Time) (string, error) {
	alg := jose.RS256
	if _, ok := c.key.Public().(*ecdsa.PublicKey); ok {
		alg = jose.ES256
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: c.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("x5t#S256", c.thumbprint))
	if err != nil {
		return "", err
	}
	jti := make([]byte, 16)
	rand.Read(jti)
	claims := josejwt.Claims{Issuer: clientID, Subject: clientID, Audience: josejwt.Audience{tokenURL},
		ID: base64.RawURLEncoding.EncodeToString(jti), IssuedAt: josejwt.NewNumericDate(now),
		NotBefore: josejwt.NewNumericDate(now), Expiry: josejwt.NewNumericDate(now.Add(10 * time.Minute))}
	return josejwt.Signed(signer).Claims(claims).Serialize()
}

// fetchWithCertificate gets an app-only token with a fresh client
// assertion.
func fetchWithCertificate(ctx context.Context, a *config.Account, c *clientCertificate, scopes []string, now time.Time) (*oauth2.Token, error) {
	as, err := c.assertion(a.ClientID, a.TokenURL, now)
	if err != nil {
		return nil, fmt.Errorf("account %q: signing the client assertion: %w", a.Name, err)
	}
	cc := clientcredentials.Config{ClientID: a.ClientID, TokenURL: a.TokenURL, Scopes: scopes,
		AuthStyle: oauth2.AuthStyleInParams, EndpointParams: url.Values{
			"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
			"client_assertion":      {as},
		}}
	return cc.Token(ctx)
}
