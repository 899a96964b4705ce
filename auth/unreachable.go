package auth

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/safetext"
)

// ProxyHint says how relayd reaches an identity provider through an
// outbound proxy. Every HTTP client of relayd (token endpoints, OpenID
// discovery, Microsoft Graph) uses Go's default transport, which takes the
// proxy from HTTPS_PROXY and NO_PROXY (http.ProxyFromEnvironment).
const ProxyHint = "if this machine reaches the internet only through a proxy, set HTTPS_PROXY " +
	"(for 'relayd authorize': HTTPS_PROXY=http://proxy:3128 relayd authorize NAME; for the service: " +
	"the drop-in /usr/share/doc/relayd/examples/proxy.conf, see relayd(8), EXAMPLES)"

// unreachable reports whether err is a request to an HTTP endpoint that
// got no answer (no DNS, no route, refused, TLS, timeout, a proxy that
// failed), with the host and why in words. Errors the endpoint answered
// (an *oauth2.RetrieveError) and interruptions are not.
func unreachable(err error) (host, proxy, why string, ok bool) {
	var ue *url.Error
	if !errors.As(err, &ue) || errors.Is(err, context.Canceled) {
		return "", "", "", false
	}
	if u, perr := url.Parse(ue.URL); perr == nil {
		host = u.Hostname()
		if p, _ := http.ProxyFromEnvironment(&http.Request{URL: u}); p != nil {
			proxy = p.Host // not p.String(): it may hold the proxy's password
		}
	}
	var dns *net.DNSError
	var op *net.OpError
	var cert *tls.CertificateVerificationError
	var unknownCA x509.UnknownAuthorityError
	var hostname x509.HostnameError
	switch {
	case errors.As(err, &dns):
		why = fmt.Sprintf("its name does not resolve (DNS: %s)", dns.Err)
		if dns.IsNotFound {
			why = "its name does not resolve (DNS: no such host)"
		}
	case errors.Is(err, syscall.ECONNREFUSED):
		why = "the connection was refused"
	case errors.Is(err, syscall.ENETUNREACH) || errors.Is(err, syscall.EHOSTUNREACH):
		why = "there is no route to it (network unreachable)"
	case errors.Is(err, context.DeadlineExceeded) || ue.Timeout():
		why = "it did not answer in time"
	case errors.As(err, &unknownCA) || errors.As(err, &hostname) || errors.As(err, &cert):
		why = "its TLS certificate is not trusted (" + ue.Err.Error() + "; an intercepting proxy's CA must be in the system's store)"
	case errors.As(err, &op) && op.Op == "proxyconnect":
		why = op.Err.Error()
	case errors.As(err, &op):
		why = op.Err.Error()
	default:
		why = ue.Err.Error()
	}
	return host, proxy, safetext.Line(why), true
}

// endpointName says which of the account's endpoints rawURL is.
func endpointName(a *config.Account, rawURL string) string {
	switch {
	case a == nil:
	case rawURL == a.TokenURL:
		return "token endpoint"
	case a.DeviceAuthURL != "" && rawURL == a.DeviceAuthURL:
		return "device authorization endpoint"
	case a.Issuer != "" && strings.HasPrefix(rawURL, strings.TrimSuffix(a.Issuer, "/")):
		return "OpenID Connect issuer"
	}
	return "identity provider"
}

// UnreachableError is a request to an identity provider's endpoint that
// got no answer: nothing about the account or its grant is wrong, the
// network (DNS, a firewall, a proxy) is in the way.
type UnreachableError struct {
	// Endpoint names what was asked: "token endpoint", "device
	// authorization endpoint", "OpenID Connect issuer".
	Endpoint string
	Host     string
	// Proxy is the proxy the request went through (from HTTPS_PROXY), or
	// "".
	Proxy string
	// Why is the cause in words: "its name does not resolve (DNS: no
	// such host)", "the connection was refused".
	Why string
	Err error
}

func (e *UnreachableError) Error() string {
	if e.Proxy != "" {
		return fmt.Sprintf("could not reach the %s %s through the proxy %s (HTTPS_PROXY): %s. Check the proxy, or leave the host out of it with NO_PROXY",
			e.Endpoint, e.Host, e.Proxy, e.Why)
	}
	return fmt.Sprintf("could not reach the %s %s: %s. Check this machine's DNS and network; %s",
		e.Endpoint, e.Host, e.Why, ProxyHint)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// Unreachable returns err as an *UnreachableError naming a's endpoint when
// it is a request that got no answer, and nil otherwise.
func Unreachable(a *config.Account, err error) *UnreachableError {
	var ue *UnreachableError
	if errors.As(err, &ue) {
		return ue
	}
	host, proxy, why, ok := unreachable(err)
	if !ok {
		return nil
	}
	var u *url.Error
	errors.As(err, &u)
	return &UnreachableError{Endpoint: endpointName(a, u.URL), Host: host, Proxy: proxy, Why: why, Err: err}
}
