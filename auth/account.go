package auth

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"sync"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
)

// Account is what relayd needs to log in upstream for one configured
// account, shared by the IMAP proxy and the SMTP queue. Safe for use from any
// goroutine.
type Account struct {
	Config *config.Account
	// Health is the account's condition, the one place that decides it.
	Health *health.Account
	// Tokens hands out access tokens; nil for provider "password".
	Tokens *Source
	// Password is the upstream password of a provider "password" account.
	Password string
	// RootCAs verifies the upstream's certificate; nil means the system
	// roots.
	RootCAs *x509.CertPool
	// tlsSessions lets upstream TLS handshakes resume (RFC 8446 §2.2),
	// skipping certificate verification and a round of key exchange.
	tlsSessions tls.ClientSessionCache
	// tlsConfigs are TLSConfig's, by host: shared by every connection
	// to that host, so that an idle upstream connection does not hold
	// one of its own. A pointer, so that a copy of the Account (doctor's)
	// shares it; nil in an Account not made by NewAccount: none kept.
	tlsConfigs *sync.Map // host → *tls.Config
}

// NewAccount reads the password file and the private CA bundle the
// configuration names. The account's condition is the token source's, or
// a new one for a password account.
func NewAccount(a *config.Account, tokens *Source) (*Account, error) {
	acct := &Account{Config: a, Tokens: tokens, tlsSessions: tls.NewLRUClientSessionCache(16), tlsConfigs: new(sync.Map)}
	if tokens != nil {
		acct.Health = tokens.Health()
	} else {
		acct.Health = health.New(a.Name, health.Options{})
	}
	if a.PasswordFile != "" {
		pw, err := ReadSecretFile(a.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("account %q: password_file: %w", a.Name, err)
		}
		acct.Password = pw
	}
	if a.CAFile != "" {
		pem, err := os.ReadFile(a.CAFile)
		if err != nil {
			return nil, fmt.Errorf("account %q: ca_file: %w", a.Name, err)
		}
		acct.RootCAs = x509.NewCertPool()
		if !acct.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("account %q: ca_file %s holds no PEM certificate", a.Name, a.CAFile)
		}
	}
	return acct, nil
}

// TLSConfig is the configuration for a TLS connection to an upstream host.
// It is shared by the account's connections to host: callers must not
// change it.
func (a *Account) TLSConfig(host string) *tls.Config {
	if a.tlsConfigs != nil {
		if v, ok := a.tlsConfigs.Load(host); ok {
			if c := v.(*tls.Config); c.RootCAs == a.RootCAs {
				return c
			}
		}
	}
	c := &tls.Config{ServerName: host, RootCAs: a.RootCAs, MinVersion: tls.VersionTLS12,
		ClientSessionCache: a.tlsSessions}
	if a.tlsConfigs != nil {
		a.tlsConfigs.Store(host, c)
	}
	return c
}
