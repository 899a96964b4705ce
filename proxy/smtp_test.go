package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/queue"
)

type smtpRelay struct {
	t      *testing.T
	idp    *testkit.IdP
	up     *testkit.SMTPUpstream
	upAddr string
	cfg    *config.Account
	src    *auth.Source
	q      *queue.Queue
	addr   string
	// tlsAddr is the implicit-TLS listener's, with listenerTLS.
	tlsAddr string
	logs    *testkit.SyncBuffer
	// dir holds the spool, in dir/queue.
	dir string
}

type smtpRelayOpts struct {
	style    testkit.Style
	tls      bool
	upDown   bool // start without a listening upstream
	maxSize  int64
	sendAs   []string
	retryMin time.Duration
	rate     int // smtp_rate
	// listenerTLS and listen: as relayOpts'.
	listenerTLS func() *tls.Config
	listen      string
	// via, when set, puts something between relayd and the fake
	// upstream: it gets the upstream's address and returns the one relayd
	// dials.
	via func(upAddr string) string
	// wrapFS: as queue.Options.WrapFS.
	wrapFS func(queue.FS) queue.FS
}

const smtpSender = testMailbox // the account's own address

func newSMTPRelay(t *testing.T, o smtpRelayOpts) *smtpRelay {
	t.Helper()
	b := relaytest.New(t)
	r := &smtpRelay{t: t, idp: b.IdP, logs: b.Logs, dir: b.Dir}
	if o.upDown {
		r.upAddr = b.DeadAddr()
	} else {
		r.up = b.SMTPUpstream(testkit.SMTPOptions{Style: o.style, TLS: o.tls})
		r.upAddr = r.up.Addr
		if o.via != nil {
			r.upAddr = o.via(r.up.Addr)
		}
	}
	acct := b.Account(testkit.Account{
		Direction: "outgoing", LocalUser: testUser, LocalPasswordHash: testHash, SMTPServer: r.upAddr, Security: "none",
		SendAs: o.sendAs, SMTPRate: o.rate,
	}, relaytest.AccountOptions{Edit: func(a *config.Account) {
		if o.tls {
			a.SMTPSecurity = config.SecurityTLS
			b.TrustCA(a, r.up.CertPEM)
		}
	}})
	r.cfg, r.src = acct.Config, acct.Tokens
	q := b.Queue(relaytest.Registry(acct), queue.Options{RetryMin: o.retryMin, WrapFS: o.wrapFS})
	r.q = q
	log := b.Log
	srv := NewSMTPServer(SMTPOptions{Users: localauth.NewUsers([]*config.Account{r.cfg}), Queue: q, Logger: log,
		Hostname: "relayd.test", MaxMessageSize: o.maxSize, AuthFailureDelay: -1, TLS: o.listenerTLS})
	if o.listen == "" {
		o.listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		t.Fatal(err)
	}
	tdone := make(chan struct{})
	if o.listenerTLS != nil {
		tln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		r.tlsAddr = tln.Addr().String()
		go func() { srv.ServeTLS(tln); close(tdone) }()
	} else {
		close(tdone)
	}
	r.addr = ln.Addr().String()
	sdone := make(chan struct{})
	go func() { srv.Serve(ln); close(sdone) }()
	panics := health.Panics()
	t.Cleanup(func() {
		srv.Close()
		<-sdone
		<-tdone
		if n := health.Panics() - panics; n != 0 {
			t.Errorf("%d panics in SMTP sessions", n)
		}
	})
	return r
}

// client returns a go-smtp client logged in to relayd.
func (r *smtpRelay) client() *smtp.Client {
	r.t.Helper()
	c, err := smtp.Dial(r.addr)
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		r.t.Fatalf("Auth() = %v", err)
	}
	return c
}

// send submits msg and returns relayd's final reply.
func (r *smtpRelay) send(c *smtp.Client, from string, to []string, msg []byte) error {
	if err := c.Mail(from, nil); err != nil {
		return err
	}
	for _, rc := range to {
		if err := c.Rcpt(rc, nil); err != nil {
			return err
		}
	}
	w, err := c.Data()
	if err != nil {
		return err
	}
	if _, err := w.Write(msg); err != nil {
		return err
	}
	return w.Close()
}

// waitMessages waits until the upstream accepted n messages.
func (r *smtpRelay) waitMessages(n int) []testkit.Message {
	r.t.Helper()
	return r.up.WaitMessages(r.t, n, 15*time.Second)
}

func TestSMTPDeliveredByteIdentical(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\r\n"), 80000) // ~5 MB
	msgs := map[string][]byte{
		"plain":        []byte("From: <support@example.com>\r\nTo: <a@example.net>\r\nSubject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nhello\r\n"),
		"dot-stuffing": []byte("Subject: dots\r\nMessage-ID: <m2@example.com>\r\n\r\n.leading dot\r\n..two dots\r\n.\r\nnot the end\r\n"),
		"8-bit":        []byte("Subject: =?utf-8?q?gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <m3@example.com>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße aus Köln, ½ € \xff\xfe\r\n"),
		"large":        append([]byte("Subject: attachment\r\nMessage-ID: <m4@example.com>\r\n\r\n"), big...),
	}
	for _, tls := range []bool{false, true} {
		t.Run(fmt.Sprintf("tls=%v", tls), func(t *testing.T) {
			r := newSMTPRelay(t, smtpRelayOpts{tls: tls})
			c := r.client()
			for name, msg := range msgs {
				if err := r.send(c, smtpSender, []string{"rcpt-" + name + "@example.net"}, msg); err != nil {
					t.Fatalf("%s: send = %v", name, err)
				}
			}
			got := r.waitMessages(len(msgs))
			for _, m := range got {
				name := strings.TrimSuffix(strings.TrimPrefix(m.To[0], "rcpt-"), "@example.net")
				body, err := testkit.StripReceived(m.Data)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if !bytes.Equal(body, msgs[name]) {
					t.Errorf("%s: delivered %d bytes differ from the %d submitted", name, len(body), len(msgs[name]))
				}
				if m.From != smtpSender {
					t.Errorf("%s: MAIL FROM %q", name, m.From)
				}
				if !bytes.Contains(m.Data[:300], []byte("by relayd.test (relayd) with ESMTPSA id ")) {
					t.Errorf("%s: Received header = %q", name, m.Data[:200])
				}
			}
		})
	}
}

// BDAT (RFC 3030 CHUNKING), sent by hand: go-smtp advertises it.
func TestSMTPBDAT(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := "Subject: chunks\r\nMessage-ID: <b1@example.com>\r\n\r\nfirst chunk\r\n.second chunk, no dot-stuffing\r\n"
	b64 := base64Std("\x00" + testUser + "\x00" + testPassword)
	script := fmt.Sprintf("EHLO client\r\nAUTH PLAIN %s\r\nMAIL FROM:<%s>\r\nRCPT TO:<x@example.net>\r\nBDAT %d\r\n%sBDAT %d LAST\r\n%sQUIT\r\n",
		b64, smtpSender, 30, msg[:30], len(msg)-30, msg[30:])
	go c.Write([]byte(script))
	reply, _ := io.ReadAll(c)
	if !bytes.Contains(reply, []byte("CHUNKING")) || !bytes.Contains(reply, []byte("250 2.0.0 queued as ")) {
		t.Fatalf("replies:\n%s", reply)
	}
	got := r.waitMessages(1)
	body, _ := testkit.StripReceived(got[0].Data)
	if string(body) != msg {
		t.Errorf("delivered %q, want %q", body, msg)
	}
}

func TestSMTPAddsMessageID(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{})
	c := r.client()
	msg := []byte("Subject: no id\r\n\r\nbody\r\n")
	if err := r.send(c, smtpSender, []string{"x@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	got := r.waitMessages(1)
	body, _ := testkit.StripReceived(got[0].Data)
	id, rest, ok := bytes.Cut(body, []byte("\r\n"))
	if !ok || !bytes.HasPrefix(id, []byte("Message-ID: <")) || !bytes.HasSuffix(id, []byte("@relayd.test>")) || !bytes.Equal(rest, msg) {
		t.Errorf("delivered %q", got[0].Data)
	}
}

func TestSMTPEnvelopePolicy(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{sendAs: []string{"helpdesk@example.com"}, maxSize: 4096})
	c := r.client()
	err := c.Mail("ceo@example.com", nil)
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 7, 1}) ||
		!strings.Contains(se.Message, "support@example.com, helpdesk@example.com") {
		t.Errorf("MAIL FROM a foreign address = %v, want 550 5.7.1 naming the allowed senders", err)
	}
	if err := c.Mail("Helpdesk@Example.com", nil); err != nil {
		t.Errorf("MAIL FROM a send_as address = %v", err)
	}
	// A recipient that is not a mailbox: 501 5.1.3, and the envelope
	// goes on.
	for _, bad := range []string{"0@0()", "x@-bad.example.net"} {
		err = c.Rcpt(bad, nil)
		if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 501 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 3}) {
			t.Errorf("RCPT TO:<%s> = %v, want 501 5.1.3", bad, err)
		}
	}
	if err := c.Rcpt("ok@example.net", nil); err != nil {
		t.Errorf("RCPT TO a mailbox after a refused one = %v", err)
	}
	c.Reset()
	err = r.send(c, smtpSender, []string{"x@example.net"}, bytes.Repeat([]byte("0123456789\r\n"), 800))
	if se, ok := err.(*smtp.SMTPError); !ok || se.Code != 552 {
		t.Errorf("oversized message = %v, want 552", err)
	}
	// Unauthenticated clients cannot send.
	c2, _ := smtp.Dial(r.addr)
	defer c2.Close()
	if err := c2.Mail(smtpSender, nil); err == nil || !strings.Contains(err.Error(), "530") {
		t.Errorf("MAIL without AUTH = %v, want 530", err)
	}
	if err := c2.Auth(sasl.NewPlainClient("", testUser, "wrong")); err == nil || !strings.Contains(err.Error(), "535") {
		t.Errorf("AUTH with a wrong password = %v, want 535", err)
	}
}

func TestSMTPAuthLogin(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{})
	c, err := smtp.Dial(r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewLoginClient(testUser, testPassword)); err != nil {
		t.Fatalf("AUTH LOGIN = %v", err)
	}
	if err := r.send(c, smtpSender, []string{"x@example.net"}, []byte("Subject: login\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitMessages(1)
}

// failingFS fails the spool's directory fsync.
type failingFS struct{ queue.FS }

func (failingFS) SyncDir() error { return fmt.Errorf("injected: no space left on device") }

// A spool failure is a 452 4.3.1 to the client, and leaves nothing queued.
func TestSMTPSpoolFailureIs452(t *testing.T) {
	b := relaytest.New(t)
	acct := b.Account(testkit.Account{Provider: "password", LocalUser: testUser, LocalPasswordHash: testHash,
		Direction: "outgoing", SMTPServer: "127.0.0.1:1", Security: "none"}, relaytest.AccountOptions{Password: "x"})
	cfg := acct.Config
	q := b.OpenQueue(relaytest.Registry(acct), queue.Options{WrapFS: func(real queue.FS) queue.FS { return failingFS{real} }})
	srv := NewSMTPServer(SMTPOptions{Users: localauth.NewUsers([]*config.Account{cfg}), Queue: q,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), AuthFailureDelay: -1})
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go srv.Serve(ln)
	defer srv.Close()
	c, err := smtp.Dial(ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", testUser, testPassword)); err != nil {
		t.Fatal(err)
	}
	r := &smtpRelay{t: t}
	err = r.send(c, testMailbox, []string{"x@example.net"}, []byte("Subject: x\r\n\r\nx\r\n"))
	se, ok := err.(*smtp.SMTPError)
	if !ok || se.Code != 452 || se.EnhancedCode != (smtp.EnhancedCode{4, 3, 1}) {
		t.Fatalf("send with a failing spool = %v, want 452 4.3.1", err)
	}
	if l := q.List(); len(l) != 0 {
		t.Errorf("queue after the failure: %+v", l)
	}
	var files []string
	for _, pattern := range []string{"*.spool", "*.msg", "*.json", "tmp/*"} {
		l, _ := filepath.Glob(filepath.Join(b.Dir, "queue", pattern))
		files = append(files, l...)
	}
	if len(files) != 0 {
		t.Errorf("spool after the failure: %v", files)
	}
}

// A line over the 1 MiB limit inside DATA is the client's fault: 500 5.5.2,
// the connection closes, and nothing blames the spool's disk.
func TestSMTPLineTooLong(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	read := func(prefix string) string {
		t.Helper()
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("waiting for %s: %v", prefix, err)
			}
			if strings.HasPrefix(line, prefix+" ") {
				return line
			}
		}
	}
	read("220")
	send := func(s string) { fmt.Fprint(c, s) }
	send("EHLO test\r\n")
	read("250")
	send("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00"+testUser+"\x00"+testPassword)) + "\r\n")
	read("235")
	send("MAIL FROM:<" + smtpSender + ">\r\nRCPT TO:<x@example.net>\r\nDATA\r\n")
	read("250")
	read("250")
	read("354")
	go func() {
		send("Subject: long\r\n\r\n" + strings.Repeat("x", 3<<19) + "\r\n.\r\n")
	}()
	if got := read("500"); !strings.Contains(got, "5.5.2") {
		t.Errorf("reply %q, want 500 5.5.2", got)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		if _, err := br.ReadString('\n'); err != nil {
			break // closed
		}
	}
	logs := r.logs.String()
	if !strings.Contains(logs, "longer than 1 MiB") || strings.Contains(logs, "check the spool's disk") {
		t.Errorf("log:\n%s", logs)
	}
	if n := len(r.q.List()); n != 0 {
		t.Errorf("%d messages queued", n)
	}
}

// RCPT TO takes a mailbox (RFC 5321 §4.1.2) and refuses other paths with
// 501 5.1.3, such as a comment after the domain, which made a header
// field that does not parse in the copy for Microsoft Graph (found by
// FuzzAdjustRecipients).
func TestValidPath(t *testing.T) {
	for _, c := range []struct {
		addr string
		ok   bool
	}{
		{"someone@example.net", true},
		{"first.last+tag@sub.example.co.uk", true},
		{"a b@example.net", true}, // "a b"@example.net, unquoted by go-smtp
		{"user@[192.0.2.1]", true},
		{"user@[IPv6:2001:db8::1]", true},
		{"josé@exämple.de", true},
		{"0@0", true},
		{"user@my_host.example", true}, // not RFC 5321, but Postfix takes it
		{"0@0()", false},
		{"@example.net", false},
		{"user@", false},
		{"user@-example.net", false},
		{"user@example-.net", false},
		{"user@example..net", false},
		{"user@exa mple.net", false},
		{"user@[999.1.1.1]", false},
		{"user@[IPv6:192.0.2.1]", false},
		{"us\x00er@example.net", false},
		{"user@example.net\r", false},
	} {
		if got := validPath(c.addr); got != c.ok {
			t.Errorf("validPath(%q) = %v, want %v", c.addr, got, c.ok)
		}
	}
}
