package testkit

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// App-only credentials at the fake IdP: Google service accounts with
// domain-wide delegation (RFC 7523 JWT bearer grant) and Microsoft client
// certificates (RFC 7523 client assertions with an x5t#S256 header). The
// IdP keeps only the public halves, as a provider does.

type serviceAccount struct {
	key       *rsa.PublicKey
	mailboxes []string // domain-wide delegation
}

type clientCert struct {
	key        *rsa.PublicKey
	thumbprint string
}

// AddServiceAccount creates a service account allowed to act for
// mailboxes and returns its JSON key file, as Google's console does.
func (p *IdP) AddServiceAccount(email string, mailboxes ...string) ([]byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	der, _ := x509.MarshalPKCS8PrivateKey(key)
	p.mu.Lock()
	if p.serviceAccounts == nil {
		p.serviceAccounts = map[string]*serviceAccount{}
	}
	p.serviceAccounts[email] = &serviceAccount{key: &key.PublicKey, mailboxes: mailboxes}
	p.mu.Unlock()
	return json.Marshal(map[string]string{
		"type": "service_account", "client_email": email, "private_key_id": "kid-" + randHex()[:8],
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
		"token_uri":   p.TokenURL(), "client_id": "1234567890",
	})
}

// AddClientCertificate makes a certificate credential for client id (an
// app registration's uploaded certificate) and returns the certificate and
// its private key, PEM-encoded.
func (p *IdP) AddClientCertificate(clientID string) (certPEM, keyPEM []byte, err error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relayd app " + clientID},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	sum := sha256.Sum256(der)
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	p.mu.Lock()
	if p.clientCerts == nil {
		p.clientCerts = map[string]*clientCert{}
	}
	p.clientCerts[clientID] = &clientCert{key: &key.PublicKey, thumbprint: base64.RawURLEncoding.EncodeToString(sum[:])}
	if _, ok := p.clients[clientID]; !ok {
		p.clients[clientID] = ""
	}
	p.mu.Unlock()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), nil
}

// serviceAccountToken answers a JWT bearer grant: the assertion must be
// signed by a known service account's key, for this token endpoint, with a
// sub the account may act for and the mail scope. p.mu is held.
func (p *IdP) serviceAccountToken(w http.ResponseWriter, r *http.Request) {
	raw := r.PostForm.Get("assertion")
	p.issued = append(p.issued, raw)
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256})
	if err != nil {
		oauthError(w, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.", 0)
		return
	}
	var unverified struct {
		Iss string `json:"iss"`
	}
	tok.UnsafeClaimsWithoutVerification(&unverified)
	sa := p.serviceAccounts[unverified.Iss]
	var c struct {
		jwt.Claims
		Scope string `json:"scope"`
	}
	switch {
	case sa == nil:
		oauthError(w, 400, "invalid_grant", "Invalid grant: account not found", 0)
	case tok.Claims(sa.key, &c) != nil:
		oauthError(w, 400, "invalid_grant", "Invalid JWT Signature.", 0)
	case c.Validate(jwt.Expected{Issuer: unverified.Iss, AnyAudience: jwt.Audience{p.TokenURL()}, Time: time.Now()}) != nil:
		oauthError(w, 400, "invalid_grant", "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe.", 0)
	case !slices.Contains(sa.mailboxes, c.Subject) || !slices.Contains(strings.Fields(c.Scope), "https://mail.google.com/"):
		oauthError(w, 401, "unauthorized_client", "Client is unauthorized to retrieve access tokens using this method, or client not authorized for any of the scopes requested.", 0)
	default:
		p.writeToken(w, &accessToken{login: c.Subject}, "", "")
	}
}

// checkAssertion verifies a client assertion for clientID: signed by its
// certificate's key, naming the certificate in x5t#S256, issued by and
// about the client, for this token endpoint. p.mu is held.
func (p *IdP) checkAssertion(clientID, raw string) (code int, desc string) {
	p.issued = append(p.issued, raw)
	cc := p.clientCerts[clientID]
	tok, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.RS256, jose.PS256})
	switch {
	case cc == nil:
		return 700027, "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."
	case err != nil || len(tok.Headers) != 1:
		return 50027, "AADSTS50027: JWT token is invalid or malformed."
	}
	if x5t, _ := tok.Headers[0].ExtraHeaders["x5t#S256"].(string); x5t != cc.thumbprint {
		return 700027, "AADSTS700027: The certificate with identifier used to sign the client assertion is not registered on application."
	}
	var c jwt.Claims
	if err := tok.Claims(cc.key, &c); err != nil {
		return 700027, "AADSTS700027: Client assertion failed signature validation."
	}
	if err := c.Validate(jwt.Expected{Issuer: clientID, Subject: clientID, AnyAudience: jwt.Audience{p.TokenURL()}, Time: time.Now()}); err != nil {
		return 700024, "AADSTS700024: Client assertion is not within its valid time range or has a wrong audience."
	}
	return 0, ""
}
