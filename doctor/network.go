package doctor

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/safetext"
)

// target is one upstream an account talks to.
type target struct {
	kind string // imap, smtp, token, graph: the checks' suffix
	key  string // the configuration key naming it
	addr string // host:port
	host string
	sec  config.Security
	// url is the token endpoint's or Graph's URL.
	url string
	// ca is the account's ca_file for the mail servers; "" for the
	// token endpoint and Graph, which are checked against the system's
	// roots as relayd's HTTP clients do.
	ca string
}

// upstreams lists the servers account a talks to.
func upstreams(a *config.Account) []target {
	var ts []target
	server := func(kind, key, addr string, sec config.Security) {
		host, _, _ := net.SplitHostPort(addr)
		ts = append(ts, target{kind: kind, key: key, addr: addr, host: host, sec: sec, ca: a.CAFile})
	}
	web := func(kind, key, raw string) {
		u, err := url.Parse(raw)
		if err != nil || u.Hostname() == "" {
			return
		}
		t := target{kind: kind, key: key, host: u.Hostname(), url: raw, sec: config.SecurityTLS}
		port := u.Port()
		if u.Scheme == "http" {
			t.sec = config.SecurityNone
			if port == "" {
				port = "80"
			}
		} else if port == "" {
			port = "443"
		}
		t.addr = net.JoinHostPort(t.host, port)
		ts = append(ts, t)
	}
	if a.Direction.Incoming() && a.IMAPServer != "" {
		server("imap", "imap_server", a.IMAPServer, a.IMAPSecurity)
	}
	if a.Direction.Outgoing() && !a.Graph() && a.SMTPServer != "" {
		server("smtp", "smtp_server", a.SMTPServer, a.SMTPSecurity)
	}
	if a.OAuth() && a.TokenURL != "" {
		web("token", "token_url", a.TokenURL)
	}
	if a.Graph() && a.GraphURL != "" {
		web("graph", "graph_url", a.GraphURL)
	}
	return ts
}

// checkUpstream checks one upstream in order: DNS, TCP, TLS; for the
// token endpoint also its answer and the clock. A step that fails skips
// those after it.
func checkUpstream(ctx context.Context, a *config.Account, t target, o Options) []Result {
	name := a.Name
	var rs []Result
	rest := func(why string, checks ...string) []Result {
		for _, c := range checks {
			rs = append(rs, skip(name, c, why))
		}
		return rs
	}
	after := []string{"tcp." + t.kind, "tls." + t.kind}
	if t.kind == "token" {
		after = append(after, "token_endpoint", "clock")
	}

	// DNS.
	if net.ParseIP(t.host) != nil {
		rs = append(rs, pass(name, "dns."+t.kind, t.host+" is an address: nothing to look up"))
	} else {
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		start := time.Now()
		addrs, err := o.Resolver.LookupHost(cctx, t.host)
		cancel()
		if err != nil {
			rs = append(rs, fail(name, "dns."+t.kind, fmt.Sprintf("cannot resolve %s (%s): %v", t.host, t.key, err),
				fmt.Sprintf("check the host name in %s and this machine's DNS (resolv.conf, a resolver that answers)", t.key)))
			return rest("DNS failed", after...)
		}
		rs = append(rs, pass(name, "dns."+t.kind, fmt.Sprintf("%s → %s (%s)", t.host, strings.Join(addrs, ", "), ms(time.Since(start)))))
	}

	// TCP.
	cctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	start := time.Now()
	conn, err := o.Dialer(cctx, "tcp", t.addr)
	if err != nil {
		rs = append(rs, fail(name, "tcp."+t.kind, fmt.Sprintf("cannot connect to %s (%s): %v", t.addr, t.key, unwrapOp(err)),
			fmt.Sprintf("check that the server listens there and that no firewall or proxy on the way blocks port %s; correct %s if it names the wrong server", port(t.addr), t.key)))
		return rest("TCP failed", after[1:]...)
	}
	rs = append(rs, pass(name, "tcp."+t.kind, fmt.Sprintf("connected to %s (%s)", conn.RemoteAddr(), ms(time.Since(start)))))

	// TLS.
	r := checkTLS(cctx, name, conn, t, o)
	conn.Close()
	rs = append(rs, r)
	if t.kind != "token" {
		return rs
	}
	if r.Failed() {
		return rest("TLS failed", "token_endpoint", "clock")
	}
	return append(rs, checkTokenEndpoint(ctx, name, t, o)...)
}

func port(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func ms(d time.Duration) string { return d.Round(time.Millisecond).String() }

// unwrapOp drops the net.OpError's restatement of the addresses.
func unwrapOp(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

// checkTLS runs the TLS handshake on conn (after STARTTLS when so
// configured) and judges the server's certificate as relayd's connections
// would, saying in words what is wrong: expired, signed by an unknown CA,
// issued for another name.
func checkTLS(ctx context.Context, acct string, conn net.Conn, t target, o Options) Result {
	check := "tls." + t.kind
	secKey := t.kind + "_security"
	if t.sec == config.SecurityNone {
		if t.url != "" {
			return pass(acct, check, fmt.Sprintf("no TLS: %s is plain http, allowed on loopback only", t.key))
		}
		return pass(acct, check, fmt.Sprintf("no TLS: %s = \"none\", allowed for loopback servers only", secKey))
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if t.sec == config.SecuritySTARTTLS {
		if err := startTLS(conn, t.kind); err != nil {
			return fail(acct, check, fmt.Sprintf("STARTTLS with %s failed: %v", t.addr, err),
				fmt.Sprintf("check that %s speaks %s with STARTTLS there; if it wants TLS from the start, set %s = \"tls\"", t.addr, strings.ToUpper(t.kind), secKey))
		}
	}
	tc := tls.Client(conn, &tls.Config{ServerName: t.host, InsecureSkipVerify: true, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		fix := "check that the server speaks TLS 1.2 or later on this port"
		if t.sec == config.SecurityTLS && t.url == "" {
			fix += fmt.Sprintf("; if it wants STARTTLS, set %s = \"starttls\"", secKey)
		}
		return fail(acct, check, fmt.Sprintf("TLS handshake with %s failed: %v", t.addr, err), fix)
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return fail(acct, check, t.addr+" sent no certificate", "the server must present a certificate")
	}
	var roots *x509.CertPool
	if t.ca != "" {
		pem, err := os.ReadFile(t.ca)
		if err != nil {
			return skip(acct, check, fmt.Sprintf("ca_file %s cannot be read by this user to check the chain: %v", t.ca, unwrapPath(err)))
		}
		roots = x509.NewCertPool()
		roots.AppendCertsFromPEM(pem)
	}
	return judgeCert(acct, check, certs, t, roots, o)
}

// judgeCert checks the leaf's dates, its chain against roots (nil: the
// system's) and its name, and says each problem in words.
func judgeCert(acct, check string, certs []*x509.Certificate, t target, roots *x509.CertPool, o Options) Result {
	leaf := certs[0]
	now := o.Now()
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	subject := safetext.Clip(leaf.Subject.String(), 120)
	var problems, fixes []string
	at := now
	switch {
	case now.After(leaf.NotAfter):
		problems = append(problems, fmt.Sprintf("the certificate (%s) expired on %s, %s ago", subject, leaf.NotAfter.UTC().Format(time.DateOnly), days(now.Sub(leaf.NotAfter))))
		fixes = append(fixes, fmt.Sprintf("the server's admin must renew the certificate of %s", t.host))
		at = leaf.NotAfter.Add(-time.Minute)
	case now.Before(leaf.NotBefore):
		problems = append(problems, fmt.Sprintf("the certificate is not valid before %s", leaf.NotBefore.UTC().Format(time.RFC3339)))
		fixes = append(fixes, "check this machine's clock (see the clock check), or the server's certificate")
		at = leaf.NotBefore.Add(time.Minute)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: at}); err != nil {
		var ua x509.UnknownAuthorityError
		switch {
		case errors.As(err, &ua):
			issuer := safetext.Clip(leaf.Issuer.String(), 120)
			if t.ca != "" {
				problems = append(problems, fmt.Sprintf("the certificate is signed by an unknown CA (%s): ca_file %s does not hold it", issuer, t.ca))
				fixes = append(fixes, fmt.Sprintf("put the CA that signed %s's certificate (PEM) in ca_file %s", t.host, t.ca))
			} else {
				problems = append(problems, fmt.Sprintf("the certificate is signed by an unknown CA (%s): the system's CA store does not trust it", issuer))
				if t.url != "" {
					fixes = append(fixes, fmt.Sprintf("add the CA that signed %s's certificate to the system's CA store (update-ca-certificates), or reach %s without a TLS-intercepting proxy", t.host, t.key))
				} else {
					fixes = append(fixes, fmt.Sprintf("set ca_file to the CA that signed %s's certificate (PEM), or give the server a certificate from a public CA", t.host))
				}
			}
		default:
			problems = append(problems, fmt.Sprintf("the certificate is not trusted: %v", err))
			fixes = append(fixes, fmt.Sprintf("give %s a certificate with a complete chain to a trusted CA", t.host))
		}
	}
	if err := leaf.VerifyHostname(t.host); err != nil {
		names := append([]string(nil), leaf.DNSNames...)
		for _, ip := range leaf.IPAddresses {
			names = append(names, ip.String())
		}
		problems = append(problems, fmt.Sprintf("the certificate is for %s, not %s (wrong name)", safetext.Clip(strings.Join(names, ", "), 200), t.host))
		fixes = append(fixes, fmt.Sprintf("set %s to a name the certificate holds, or give the server a certificate for %s", t.key, t.host))
	}
	if len(problems) > 0 {
		return fail(acct, check, t.addr+": "+strings.Join(problems, "; "), strings.Join(fixes, "; "))
	}
	left := leaf.NotAfter.Sub(now)
	detail := fmt.Sprintf("%s: certificate for %s, trusted (%s), valid until %s", t.addr, t.host, rootsName(t), leaf.NotAfter.UTC().Format(time.DateOnly))
	if left < o.CertWarning {
		return warn(acct, check, fmt.Sprintf("%s: the certificate expires in %s, on %s", t.addr, days(left), leaf.NotAfter.UTC().Format(time.DateOnly)),
			fmt.Sprintf("the server's admin must renew the certificate of %s before then", t.host))
	}
	return pass(acct, check, detail)
}

func rootsName(t target) string {
	if t.ca != "" {
		return "ca_file " + t.ca
	}
	return "system CA store"
}

func days(d time.Duration) string {
	if d < 48*time.Hour {
		return d.Round(time.Minute).String()
	}
	return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
}

// startTLS asks an IMAP (RFC 3501 §6.2.1) or SMTP (RFC 3207) server for
// TLS, after its greeting.
func startTLS(conn net.Conn, kind string) error {
	br := bufio.NewReader(conn)
	line := func() (string, error) {
		s, err := br.ReadString('\n')
		if len(s) > 512 {
			s = s[:512]
		}
		return strings.TrimRight(s, "\r\n"), err
	}
	reply := func() (string, error) { // an SMTP reply, multi-line or not
		for {
			s, err := line()
			if err != nil {
				return s, err
			}
			if len(s) < 4 || s[3] != '-' {
				return s, nil
			}
		}
	}
	say := func(s string) error { _, err := conn.Write([]byte(s + "\r\n")); return err }
	if kind == "imap" {
		g, err := line()
		if err != nil {
			return fmt.Errorf("reading the greeting: %w", err)
		}
		if !strings.HasPrefix(g, "* OK") {
			return fmt.Errorf("greeting %q", safetext.Line(g))
		}
		if err := say("D1 STARTTLS"); err != nil {
			return err
		}
		for {
			s, err := line()
			if err != nil {
				return err
			}
			if strings.HasPrefix(s, "D1 ") {
				if !strings.HasPrefix(s, "D1 OK") {
					return fmt.Errorf("server said %q", safetext.Line(s))
				}
				return nil
			}
		}
	}
	if g, err := reply(); err != nil || !strings.HasPrefix(g, "220") {
		return fmt.Errorf("greeting %q: %v", safetext.Line(g), err)
	}
	if err := say("EHLO relayd-doctor"); err != nil {
		return err
	}
	if s, err := reply(); err != nil || !strings.HasPrefix(s, "250") {
		return fmt.Errorf("EHLO: %q %v", safetext.Line(s), err)
	}
	if err := say("STARTTLS"); err != nil {
		return err
	}
	if s, err := reply(); err != nil || !strings.HasPrefix(s, "220") {
		return fmt.Errorf("server said %q %v", safetext.Line(s), err)
	}
	return nil
}

// Clock skew limits: beyond clockWarn a warning, beyond clockFail a
// failure (tokens and certificates are judged by time).
const (
	clockWarn = time.Minute
	clockFail = 5 * time.Minute
)

// checkTokenEndpoint asks the token endpoint a request that carries no
// credentials (an empty POST), which any OAuth endpoint answers with an
// error: it is reachable when it answers, and its Date header (RFC 9110
// §6.6.1) tells how far this machine's clock is off.
func checkTokenEndpoint(ctx context.Context, acct string, t target, o Options) []Result {
	ctx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, strings.NewReader(""))
	if err != nil {
		return []Result{fail(acct, "token_endpoint", err.Error(), "correct token_url"), skip(acct, "clock", "no answer from the token endpoint")}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	start := o.Now()
	t0 := time.Now()
	resp, err := o.HTTPClient.Do(req)
	rtt := time.Since(t0)
	if err != nil {
		return []Result{fail(acct, "token_endpoint", fmt.Sprintf("%s does not answer: %v", t.url, unwrapURL(err)),
			fmt.Sprintf("check the network path to %s (a proxy? set HTTPS_PROXY in the unit's environment) and token_url", t.host)),
			skip(acct, "clock", "no answer from the token endpoint")}
	}
	resp.Body.Close()
	var rs []Result
	code := resp.StatusCode
	switch {
	case code >= 500:
		rs = append(rs, fail(acct, "token_endpoint", fmt.Sprintf("%s failed (HTTP %d)", t.url, code),
			"the identity provider has trouble: relayd retries by itself; check the provider's status page"))
	case code == 400 || code == 401:
		rs = append(rs, pass(acct, "token_endpoint", fmt.Sprintf("%s answers (HTTP %d to a request without credentials, as it should; %s)", t.url, code, ms(rtt))))
	default:
		rs = append(rs, warn(acct, "token_endpoint", fmt.Sprintf("%s answered HTTP %d to a request without credentials, where a token endpoint says 400 or 401", t.url, code),
			"check that token_url is the provider's token endpoint"))
	}
	date, err := http.ParseTime(resp.Header.Get("Date"))
	if err != nil {
		return append(rs, warn(acct, "clock", t.host+" sent no Date header: this machine's clock cannot be compared with it", ""))
	}
	// Date has whole seconds: compare with the middle of the exchange.
	skew := date.Sub(start.Add(rtt / 2))
	abs := max(skew, -skew)
	dir := "behind"
	if skew < 0 {
		dir = "ahead of"
	}
	what := fmt.Sprintf("this machine's clock is %s %s %s", abs.Round(time.Second), dir, t.host)
	fix := fmt.Sprintf("synchronise the clock of %s (systemd-timesyncd or chrony: timedatectl set-ntp true): tokens and certificates are judged by time", hostname())
	switch {
	case abs > clockFail:
		rs = append(rs, fail(acct, "clock", what+" (more than 5 minutes)", fix))
	case abs > clockWarn:
		rs = append(rs, warn(acct, "clock", what+" (more than a minute)", fix))
	default:
		rs = append(rs, pass(acct, "clock", fmt.Sprintf("within %s of %s", max(abs.Round(time.Second), time.Second), t.host)))
	}
	return rs
}

func unwrapURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return unwrapOp(ue.Err)
	}
	return err
}
