package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/daemon"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/localauth"
)

const (
	demoUser     = "demo@example.com"
	demoPassword = "demo-password"
	demoClient   = "relayd-demo"
)

// runDemo runs the real daemon against the in-process fake identity
// provider and an XOAUTH2-only IMAP server, so a newcomer sees relayd work
// without any account.
func runDemo(args []string) error {
	fs := newFlagSet("demo")
	listen := fs.String("listen", "127.0.0.1:1143", "IMAP listen `address`")
	smtpListen := fs.String("smtp-listen", "127.0.0.1:1587", "SMTP listen `address`")
	webListen := fs.String("web-listen", "127.0.0.1:8025", "web console listen `address` (\"\": none)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "relayd-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	idp, err := testkit.NewIdP()
	if err != nil {
		return err
	}
	defer idp.Close()
	idp.AddClient(demoClient, "")
	up, err := testkit.NewIMAPUpstream(idp, testkit.IMAPOptions{Style: testkit.Google, TLS: true})
	if err != nil {
		return err
	}
	defer up.Close()
	up.AddUser(demoUser)
	subjects := []string{"Welcome to relayd", "Your ticket #4711 was updated"}
	for i, subj := range subjects {
		msg := fmt.Sprintf("From: helpdesk@example.com\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMessage-ID: <demo-%d@example.com>\r\n\r\n"+
			"This message was read from an IMAP server that accepts only OAuth 2.0 (XOAUTH2).\r\n"+
			"relayd logged in there for you with a token it keeps fresh.\r\n",
			demoUser, subj, time.Now().Format(time.RFC1123Z), i)
		up.Deliver(demoUser, []byte(msg))
	}
	smtpUp, err := testkit.NewSMTPUpstream(idp, testkit.SMTPOptions{Style: testkit.Exchange, TLS: true})
	if err != nil {
		return err
	}
	defer smtpUp.Close()
	caFile := filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(caFile, append(append([]byte{}, up.CertPEM...), smtpUp.CertPEM...), 0o600); err != nil {
		return err
	}
	hash, err := localauth.HashPassword(demoPassword)
	if err != nil {
		return err
	}
	webAddr, err := demoWebAddr(*webListen, !flagSet(fs, "web-listen"))
	if err != nil {
		return err
	}
	tc := testkit.Config{
		StateDir: filepath.Join(dir, "state"), StatusSocket: filepath.Join(dir, "status.sock"),
		IMAPListen: []string{*listen}, SMTPListen: []string{*smtpListen},
		Accounts: []testkit.Account{{
			Name: "demo", Provider: "custom", Email: demoUser, ClientID: demoClient, TokenURL: idp.TokenURL(),
			// The fake IdP signs in at once: Reauthorize in the console
			// goes there and back.
			AuthURL: idp.AuthURL(), DeviceAuthURL: idp.DeviceAuthURL(), Issuer: idp.IssuerURL(),
			IMAPServer: up.Addr, SMTPServer: smtpUp.Addr, Security: "tls", CAFile: caFile,
			Direction: "both", LocalUser: "demo", LocalPasswordHash: hash,
		}},
	}
	if webAddr != "" {
		tc.Web = []string{`listen = "` + webAddr + `"`, `redirect_uri = "http://` + webAddr + `/oauth/callback"`}
	}
	cfgText := tc.TOML()
	cfg, err := config.Parse(cfgText)
	if err != nil {
		return err
	}
	// Consent happens at the fake IdP; relayd imports the refresh token as
	// 'relayd authorize demo --refresh-token-file F' would.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	g, err := auth.ImportRefreshToken(ctx, cfg.Accounts[0], nil, idp.IssueRefreshToken(demoClient, demoUser))
	if err != nil {
		return err
	}
	if err := (&auth.Store{Dir: cfg.StateDir}).Save("demo", g); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "relayd.toml"), []byte(cfgText), 0o600)
	d, err := daemon.New(cfg, daemon.Options{Logger: newLogger(cfg)})
	if err != nil {
		return fmt.Errorf("%w (choose other addresses with --listen, --smtp-listen or --web-listen)", err)
	}
	addr, smtpAddr := d.IMAPAddrs()[0], d.SMTPAddrs()[0]
	web := ""
	if d.Console() != nil {
		link, _ := d.Console().IssueLink(true, "relayd demo")
		web = fmt.Sprintf("The web console (the link works once; %s web-login --socket %s prints another):\n  %s\n\n", self(), cfg.StatusSocket, link)
	}
	fmt.Print(demoInstructions(addr, smtpAddr, len(subjects), cfg.StatusSocket, filepath.Join(dir, "relayd.toml"), web))
	go func() {
		seen := 0
		for range smtpUp.Arrived() {
			msgs := smtpUp.Messages()
			for _, m := range msgs[seen:] {
				fmt.Printf("demo upstream: received a message from %s to %v (%d bytes) over XOAUTH2\n", m.From, m.To, len(m.Data))
			}
			seen = len(msgs)
		}
	}()
	return runUntilSignal(d, 5*time.Second, slog.Default())
}

// demoWebAddr is the console's address: addr, or with port 0 a free
// port chosen now (the redirect URI must name it before relayd starts).
// The console is a side show of the demo: when the default address is
// taken, another port is chosen rather than the demo refused.
func demoWebAddr(addr string, isDefault bool) (string, error) {
	if addr == "" {
		return "", nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", err
	}
	if port != "0" {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			ln.Close()
			return addr, nil
		}
		if !isDefault {
			return "", fmt.Errorf("web console %s: %w (choose another address with --web-listen, or none with --web-listen \"\")", addr, err)
		}
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// self is the path of the running relayd, so that the commands the demo
// prints work as printed (go run leaves no relayd on the PATH).
func self() string {
	if p, err := os.Executable(); err == nil {
		return p
	}
	return "relayd"
}

// demoInstructions is what the demo prints: commands that work as printed.
// The read commands fetch through URLs (RFC 5092) rather than a custom
// FETCH: curl prints a fetched message or section as the body, but drops
// the literals of a FETCH given with -X, which would show no subjects.
func demoInstructions(imapAddr, smtpAddr string, messages int, socket, cfgFile, web string) string {
	return fmt.Sprintf(`relayd demo: IMAP on %[1]s and SMTP on %[2]s, in front of XOAUTH2-only servers

  user:     demo
  password: %[3]s

Try:
  curl -s 'imap://%[1]s/INBOX/;MAILINDEX=[1-%[4]d]/;SECTION=HEADER.FIELDS%%20(SUBJECT)' -u demo:%[3]s
  curl -s 'imap://%[1]s/INBOX/;UID=1' -u demo:%[3]s
  swaks --server %[2]s --auth LOGIN --auth-user demo --auth-password %[3]s --from %[5]s --to someone@example.net
  %[6]s status --socket %[7]s
  %[6]s queue list -c %[8]s

%[9]sPress Ctrl-C to stop.
`, imapAddr, smtpAddr, demoPassword, messages, demoUser, self(), socket, cfgFile, web)
}
