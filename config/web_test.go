package config

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// [web] is off by default, with a 30-minute session idle time.
func TestWebDefaults(t *testing.T) {
	for _, doc := range []string{"", "[web]\n", "[web]\nlisten = \"\"\n"} {
		cfg, err := Parse(doc)
		if err != nil {
			t.Fatalf("Parse(%q) = %v, want nil", doc, err)
		}
		if want := (Web{SessionIdle: 30 * time.Minute}); cfg.Web != want {
			t.Errorf("Parse(%q).Web = %+v, want %+v", doc, cfg.Web, want)
		}
		if cfg.Web.Enabled() || cfg.Web.TLS() {
			t.Errorf("Parse(%q): Enabled() = %v, TLS() = %v, want false, false", doc, cfg.Web.Enabled(), cfg.Web.TLS())
		}
	}
}

func TestWebValid(t *testing.T) {
	for _, tc := range []struct {
		name, doc string
		want      Web
		tls       bool
	}{
		{"loopback with redirect", "listen = \"127.0.0.1:8025\"\nredirect_uri = \"http://localhost:8025/oauth/callback\"\nsession_idle = \"1h\"\n",
			Web{Listen: "127.0.0.1:8025", RedirectURI: "http://localhost:8025/oauth/callback", SessionIdle: time.Hour}, false},
		{"localhost", "listen = \"localhost:8025\"\n", Web{Listen: "localhost:8025", SessionIdle: 30 * time.Minute}, false},
		{"ipv6 loopback", "listen = \"[::1]:8025\"\nredirect_uri = \"http://[::1]:8025/oauth/callback\"\n",
			Web{Listen: "[::1]:8025", RedirectURI: "http://[::1]:8025/oauth/callback", SessionIdle: 30 * time.Minute}, false},
		{"http redirect to 127.0.0.0/8", "listen = \"127.0.0.2:8025\"\nredirect_uri = \"http://127.0.0.2:8025/oauth/callback\"\n",
			Web{Listen: "127.0.0.2:8025", RedirectURI: "http://127.0.0.2:8025/oauth/callback", SessionIdle: 30 * time.Minute}, false},
		{"https redirect on loopback", "listen = \"127.0.0.1:8025\"\nredirect_uri = \"https://localhost/oauth/callback\"\n",
			Web{Listen: "127.0.0.1:8025", RedirectURI: "https://localhost/oauth/callback", SessionIdle: 30 * time.Minute}, false},
		{"beyond loopback with a certificate", "listen = \"0.0.0.0:8443\"\ntls_cert = \"/etc/relayd/tls/fullchain.pem\"\ntls_key = \"/etc/relayd/tls/privkey.pem\"\nredirect_uri = \"https://relayd.example.com:8443/oauth/callback\"\n",
			Web{Listen: "0.0.0.0:8443", CertFile: "/etc/relayd/tls/fullchain.pem", KeyFile: "/etc/relayd/tls/privkey.pem",
				RedirectURI: "https://relayd.example.com:8443/oauth/callback", SessionIdle: 30 * time.Minute}, true},
		{"host name with a certificate", "listen = \"relayd.example.com:8443\"\ntls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\n",
			Web{Listen: "relayd.example.com:8443", CertFile: "/c.pem", KeyFile: "/k.pem", SessionIdle: 30 * time.Minute}, true},
		{"shortest session idle", "listen = \"127.0.0.1:8025\"\nsession_idle = \"1m\"\n", Web{Listen: "127.0.0.1:8025", SessionIdle: time.Minute}, false},
		{"longest session idle", "listen = \"127.0.0.1:8025\"\nsession_idle = \"12h\"\n", Web{Listen: "127.0.0.1:8025", SessionIdle: 12 * time.Hour}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Parse("[web]\n" + tc.doc)
			if err != nil {
				t.Fatalf("Parse() = %v, want nil", err)
			}
			if cfg.Web != tc.want {
				t.Errorf("Web = %+v, want %+v", cfg.Web, tc.want)
			}
			if !cfg.Web.Enabled() || cfg.Web.TLS() != tc.tls {
				t.Errorf("Enabled() = %v, TLS() = %v, want true, %v", cfg.Web.Enabled(), cfg.Web.TLS(), tc.tls)
			}
		})
	}
}

// Each rule of [web] is one error naming its key.
func TestWebErrors(t *testing.T) {
	const lo = "listen = \"127.0.0.1:8025\"\n"
	for _, tc := range []struct{ name, doc, want string }{
		{"unknown key", "listen_tls = [\"127.0.0.1:8443\"]\n", `^web.listen_tls: unknown key$`},
		{"beyond loopback without a certificate", "listen = \"0.0.0.0:8025\"\n",
			`^web.listen: "0.0.0.0" is not a loopback address: a console beyond loopback needs TLS, .*: set web.tls_cert and web.tls_key \(it then serves HTTPS\), or listen on 127.0.0.1$`},
		{"host name without a certificate", "listen = \"relayd.example.com:8025\"\n", `^web.listen: "relayd.example.com" is not a loopback address: a console beyond loopback needs TLS`},
		{"no port", "listen = \"127.0.0.1\"\n", `^web.listen: "127.0.0.1" is not host:port$`},
		{"empty port", "listen = \"127.0.0.1:\"\n", `^web.listen: "127.0.0.1:": port "" is not a number from 1 to 65535$`},
		{"port out of range", "listen = \"127.0.0.1:70000\"\n", `^web.listen: "127.0.0.1:70000": port "70000" is not a number`},
		{"same address as imap", "listen = \"127.0.0.1:1143\"\n", `^web.listen: "127.0.0.1:1143" is already imap.listen\[0\]$`},
		{"cert without key", lo + "tls_cert = \"/etc/relayd/tls/fullchain.pem\"\n", `^web.tls_key: missing: web.tls_cert needs the private key's file beside it$`},
		{"key without cert", lo + "tls_key = \"/etc/relayd/tls/privkey.pem\"\n", `^web.tls_cert: missing: web.tls_key needs the certificate's file beside it$`},
		{"beyond loopback with a cert but no key", "listen = \"0.0.0.0:8443\"\ntls_cert = \"/c.pem\"\n", `(?s)^web.tls_key: missing.*\nweb.listen: "0.0.0.0" is not a loopback address`},
		{"relative cert", lo + "tls_cert = \"tls/cert.pem\"\ntls_key = \"/k.pem\"\n", `^web.tls_cert: "tls/cert.pem": give an absolute path$`},
		{"relative key", lo + "tls_cert = \"/c.pem\"\ntls_key = \"key.pem\"\n", `^web.tls_key: "key.pem": give an absolute path$`},
		{"empty cert", lo + "tls_cert = \"\"\n", `^web.tls_cert: must not be empty`},
		{"redirect path", lo + "redirect_uri = \"http://localhost:8025/callback\"\n", `^web.redirect_uri: "http://localhost:8025/callback": the path must be /oauth/callback, with no query or fragment`},
		{"redirect without a path", lo + "redirect_uri = \"http://localhost:8025\"\n", `^web.redirect_uri: "http://localhost:8025": the path must be /oauth/callback`},
		{"redirect trailing slash", lo + "redirect_uri = \"http://localhost:8025/oauth/callback/\"\n", `^web.redirect_uri: "http://localhost:8025/oauth/callback/": the path must be /oauth/callback`},
		{"redirect path escaped", lo + "redirect_uri = \"http://localhost:8025/oauth/%63allback\"\n", `^web.redirect_uri: "http://localhost:8025/oauth/%63allback": the path must be`},
		{"redirect query", lo + "redirect_uri = \"http://localhost:8025/oauth/callback?x=1\"\n", `^web.redirect_uri: "http://localhost:8025/oauth/callback\?x=1": the path must be /oauth/callback, with no query or fragment`},
		{"redirect empty query", lo + "redirect_uri = \"http://localhost:8025/oauth/callback?\"\n", `^web.redirect_uri: .*with no query or fragment`},
		{"redirect fragment", lo + "redirect_uri = \"http://localhost:8025/oauth/callback#top\"\n", `^web.redirect_uri: .*with no query or fragment`},
		{"redirect empty fragment", lo + "redirect_uri = \"http://localhost:8025/oauth/callback#\"\n", `^web.redirect_uri: .*with no query or fragment`},
		{"redirect http beyond loopback", lo + "redirect_uri = \"http://relayd.example.com:8025/oauth/callback\"\n",
			`^web.redirect_uri: "http://relayd.example.com:8025/oauth/callback": use https \(plain http is allowed only for a loopback host`},
		{"redirect http to a LAN address", lo + "redirect_uri = \"http://192.168.1.5:8025/oauth/callback\"\n", `^web.redirect_uri: .*: use https`},
		{"redirect relative", lo + "redirect_uri = \"/oauth/callback\"\n", `^web.redirect_uri: "/oauth/callback" is not an absolute http\(s\) URL`},
		{"redirect no scheme", lo + "redirect_uri = \"localhost:8025/oauth/callback\"\n", `^web.redirect_uri: "localhost:8025/oauth/callback" is not an absolute http\(s\) URL`},
		{"redirect scheme", lo + "redirect_uri = \"ftp://localhost/oauth/callback\"\n", `^web.redirect_uri: "ftp://localhost/oauth/callback" is not an absolute http\(s\) URL`},
		{"redirect without host", lo + "redirect_uri = \"http://:8025/oauth/callback\"\n", `^web.redirect_uri: "http://:8025/oauth/callback" is not an absolute http\(s\) URL`},
		{"redirect with a password", lo + "redirect_uri = \"https://u:p@relayd.example.com/oauth/callback\"\n", `^web.redirect_uri: must not hold a user name or password`},
		{"redirect without listen", "redirect_uri = \"http://localhost:8025/oauth/callback\"\n", `^web.redirect_uri: needs web.listen: the console is off without it$`},
		{"session idle too short", lo + "session_idle = \"30s\"\n", `^web.session_idle: "30s" is out of range: give from "1m" to "12h"$`},
		{"session idle too long", lo + "session_idle = \"13h\"\n", `^web.session_idle: "13h" is out of range: give from "1m" to "12h"$`},
		{"session idle zero", lo + "session_idle = \"0s\"\n", `^web.session_idle: "0s" is not a positive duration`},
		{"session idle not a duration", lo + "session_idle = \"half an hour\"\n", `^web.session_idle: "half an hour" is not a positive duration like "90s" or "30m"$`},
		{"session idle type", lo + "session_idle = 30\n", `^web.session_idle: `},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("[web]\n" + tc.doc)
			if err == nil {
				t.Fatalf("Parse() = nil, want error matching %s", tc.want)
			}
			if !regexp.MustCompile(tc.want).MatchString(err.Error()) {
				t.Errorf("Parse() = %q, want match for %s", err, tc.want)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n > 1 && !strings.Contains(tc.want, `\n`) {
				t.Errorf("Parse() = %q: %d errors, want one", err, n)
			}
		})
	}
}

// CheckFiles loads the console's certificate and key as the listeners'.
func TestCheckFilesWebTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	keyPEM, certPEM, err := testkitSelfSigned("relayd.example.net")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o640); err != nil {
		t.Fatal(err)
	}
	check := func(c, k string) string {
		t.Helper()
		cfg, err := Parse("state_dir = \"" + dir + "\"\n[web]\nlisten = \"0.0.0.0:8443\"\ntls_cert = \"" + c + "\"\ntls_key = \"" + k + "\"\n")
		if err != nil {
			t.Fatal(err)
		}
		var l []string
		for _, e := range cfg.CheckFiles() {
			if s := e.Error(); strings.Contains(s, "web.") {
				l = append(l, s)
			}
		}
		return strings.Join(l, "\n")
	}
	if got := check(certFile, keyFile); got != "" {
		t.Fatalf("CheckFiles() = %s, want nothing about web", got)
	}
	missing := filepath.Join(dir, "missing.pem")
	if got := check(missing, keyFile); !strings.Contains(got, "web.tls_cert: cannot read "+missing) {
		t.Errorf("CheckFiles() with a missing certificate = %q", got)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := check(certFile, keyFile); !strings.Contains(got, "web.tls_key: "+keyFile+" holds a private key but others may read or change it (mode 0644)") {
		t.Errorf("CheckFiles() with a 0644 key = %q", got)
	}
}
