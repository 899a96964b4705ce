// Package tlscert holds the certificates relayd's downstream listeners
// present: it loads a certificate and its key from PEM files (as the
// service user, at start and at each reload) and serves the current one
// through tls.Config.GetCertificate, so that a reload replaces the
// certificate for the next connection while open sessions keep theirs.
// TLS 1.2 is the minimum (RFC 8996 retired 1.0 and 1.1; RFC 9325 §3.1.1).
package tlscert

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync/atomic"
	"time"
)

// ExpiryWarning is how long before its end a certificate is reported in
// status and metrics as expiring.
const ExpiryWarning = 14 * 24 * time.Hour

// Pair is a loaded certificate chain and key.
type Pair struct {
	Cert *tls.Certificate
	// CertFile and KeyFile are where it was read from.
	CertFile, KeyFile string
	// NotAfter is the leaf certificate's end.
	NotAfter time.Time
	// Subject names the leaf (its first DNS name, or its common name).
	Subject string
}

// ExpiresSoon reports whether the certificate ends within ExpiryWarning
// of now (or has ended).
func (p *Pair) ExpiresSoon(now time.Time) bool { return p.NotAfter.Sub(now) < ExpiryWarning }

// Load reads a certificate chain (leaf first) and its private key. table
// ("imap", "smtp", "pop3") names the keys in errors, which name the file
// too: "imap.tls_key: cannot read /etc/relayd/tls.key: permission denied".
func Load(table, certFile, keyFile string) (*Pair, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("%s.tls_cert: cannot read %s: %w", table, certFile, unwrapPath(err))
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("%s.tls_key: cannot read %s: %w", table, keyFile, unwrapPath(err))
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s.tls_cert, %s.tls_key: %s and %s are no certificate and matching key: %w", table, table, certFile, keyFile, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("%s.tls_cert: %s: %w", table, certFile, err)
		}
		cert.Leaf = leaf
	}
	subject := leaf.Subject.CommonName
	if len(leaf.DNSNames) > 0 {
		subject = leaf.DNSNames[0]
	}
	return &Pair{Cert: &cert, CertFile: certFile, KeyFile: keyFile, NotAfter: leaf.NotAfter, Subject: subject}, nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// Holder holds the certificate one protocol's listeners present, or none.
// Its methods are safe for use from any goroutine.
type Holder struct {
	pair atomic.Pointer[Pair]
	// last is the last certificate set, still presented to a handshake
	// after Set(nil): a go-smtp listener keeps offering STARTTLS until
	// it is served again.
	last atomic.Pointer[Pair]
	cfg  *tls.Config
}

// NewHolder returns a holder presenting p (nil: none).
func NewHolder(p *Pair) *Holder {
	h := &Holder{}
	h.cfg = &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if p := h.last.Load(); p != nil {
				return p.Cert, nil
			}
			return nil, errors.New("no certificate configured")
		},
	}
	h.Set(p)
	return h
}

// Set replaces the certificate (nil: none) for the connections that start
// a handshake from now on; handshakes done keep theirs.
func (h *Holder) Set(p *Pair) {
	if p != nil {
		h.last.Store(p)
	}
	h.pair.Store(p)
}

// Current is the certificate presented now, or nil.
func (h *Holder) Current() *Pair { return h.pair.Load() }

// Config is the server configuration of the listeners, or nil while there
// is no certificate (then no STARTTLS is offered). It is the same value
// every time: do not change it.
func (h *Holder) Config() *tls.Config {
	if h == nil || h.pair.Load() == nil {
		return nil
	}
	return h.cfg
}
