package config

import (
	"fmt"
	"net/netip"
	"strings"
)

// ListenerTLS is what the downstream listeners of one protocol ([imap],
// [smtp], [pop3]) share beyond their plain listen addresses: the
// certificate they present, the implicit-TLS addresses and which clients
// may connect at all. A table embeds it and its raw table embeds
// rawListenerTLS, so that adding a protocol takes one line in each and one
// call to rawListenerTLS.convert.
type ListenerTLS struct {
	// ListenTLS are host:port addresses served with implicit TLS (993,
	// 465, 995 style). Default none; needs CertFile.
	ListenTLS []string
	// CertFile and KeyFile are PEM files (the certificate chain, leaf
	// first, and its private key), read as the service user at start and
	// at each reload. Both or neither. With them, plain listen addresses
	// offer STARTTLS (STLS for POP3), and may be beyond loopback.
	CertFile, KeyFile string
	// AllowFrom, when not empty, are the only client networks that may
	// connect; others are closed before the greeting. Default: any.
	AllowFrom []netip.Prefix
}

// HasCert reports whether the listeners have a certificate.
func (l *ListenerTLS) HasCert() bool { return l.CertFile != "" }

// Allowed reports whether a client at addr may connect.
func (l *ListenerTLS) Allowed(addr netip.Addr) bool {
	if len(l.AllowFrom) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range l.AllowFrom {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// rawListenerTLS is ListenerTLS's keys, embedded in each protocol's raw
// table.
type rawListenerTLS struct {
	ListenTLS []string `toml:"listen_tls"`
	TLSCert   *string  `toml:"tls_cert"`
	TLSKey    *string  `toml:"tls_key"`
	AllowFrom []string `toml:"allow_from"`
}

// convert checks the listener keys of table (whose plain addresses are
// listen) and returns them typed. A listen address beyond loopback needs
// tls_cert; listen_tls needs it too.
func (r *rawListenerTLS) convert(table string, listen []string, bad badFunc) ListenerTLS {
	var l ListenerTLS
	l.CertFile, l.KeyFile = convertCertKey(table, r.TLSCert, r.TLSKey, bad)
	hasCert := l.CertFile != "" && l.KeyFile != ""
	for i, addr := range listen {
		checkListen(fmt.Sprintf("%s.listen[%d]", table, i), addr, hasCert, table, bad)
	}
	l.ListenTLS = r.ListenTLS
	for i, addr := range l.ListenTLS {
		key := fmt.Sprintf("%s.listen_tls[%d]", table, i)
		if !hasCert {
			bad(key, "%q: implicit TLS needs a certificate: set %s.tls_cert and %s.tls_key", addr, table, table)
			continue
		}
		checkListen(key, addr, true, table, bad)
	}
	for i, s := range r.AllowFrom {
		key := fmt.Sprintf("%s.allow_from[%d]", table, i)
		p, err := netip.ParsePrefix(s)
		if err != nil {
			a, aerr := netip.ParseAddr(s)
			if aerr != nil {
				bad(key, "%q is neither a network (CIDR, like \"192.168.1.0/24\") nor an address", s)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Masked() != p {
			bad(key, "%q has host bits set: did you mean %q?", s, p.Masked().String())
			continue
		}
		l.AllowFrom = append(l.AllowFrom, netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-unmapBits(p)))
	}
	return l
}

// convertCertKey checks table's tls_cert and tls_key: PEM files given by
// absolute paths, both or neither.
func convertCertKey(table string, cert, key *string, bad badFunc) (certFile, keyFile string) {
	if cert != nil {
		if *cert == "" {
			bad(table+".tls_cert", "must not be empty: give the certificate's PEM file, or remove the key")
		}
		certFile = *cert
	}
	if key != nil {
		if *key == "" {
			bad(table+".tls_key", "must not be empty: give the private key's PEM file, or remove the key")
		}
		keyFile = *key
	}
	switch {
	case certFile != "" && keyFile == "":
		bad(table+".tls_key", "missing: %s.tls_cert needs the private key's file beside it", table)
	case certFile == "" && keyFile != "":
		bad(table+".tls_cert", "missing: %s.tls_key needs the certificate's file beside it", table)
	}
	for _, f := range []struct{ key, path string }{{"tls_cert", certFile}, {"tls_key", keyFile}} {
		if f.path != "" && !strings.HasPrefix(f.path, "/") {
			bad(table+"."+f.key, "%q: give an absolute path", f.path)
		}
	}
	return certFile, keyFile
}

// unmapBits is how many bits an IPv4-mapped prefix loses as it is unmapped.
func unmapBits(p netip.Prefix) int {
	if p.Addr().Is4In6() {
		return 96
	}
	return 0
}

// Listeners is one protocol's listener settings, named by its table.
type Listeners struct {
	Table  string // "imap", "pop3", "smtp"
	Listen []string
	*ListenerTLS
}

// Listeners lists the downstream listener settings of every protocol.
func (c *Config) Listeners() []Listeners {
	return []Listeners{
		{"imap", c.IMAP.Listen, &c.IMAP.ListenerTLS},
		{"pop3", c.POP3.Listen, &c.POP3.ListenerTLS},
		{"smtp", c.SMTP.Listen, &c.SMTP.ListenerTLS},
	}
}
