package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
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
	events chan queue.Event
	logs   *testkit.SyncBuffer
}

type smtpRelayOpts struct {
	style    testkit.Style
	tls      bool
	upDown   bool // start without a listening upstream
	maxSize  int64
	sendAs   []string
	retryMin time.Duration
	rate     int // smtp_rate
}

const smtpSender = testMailbox // the account's own address

func newSMTPRelay(t *testing.T, o smtpRelayOpts) *smtpRelay {
	t.Helper()
	idp := testkit.StartIdP(t)
	var err error
	r := &smtpRelay{t: t, idp: idp, events: make(chan queue.Event, 1000), logs: &testkit.SyncBuffer{}}
	dir := t.TempDir()
	if o.upDown {
		ln, _ := net.Listen("tcp", "127.0.0.1:0")
		r.upAddr = ln.Addr().String()
		ln.Close()
	} else {
		r.up, err = testkit.NewSMTPUpstream(idp, testkit.SMTPOptions{Style: o.style, TLS: o.tls})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.up.Close() })
		r.upAddr = r.up.Addr
	}
	r.cfg = &config.Account{
		Name: "support", Provider: "custom", Email: testMailbox, Login: testMailbox, ClientID: "client",
		TokenURL: idp.TokenURL(), Grant: config.GrantRefreshToken, Direction: config.DirBoth,
		LocalUser: testUser, LocalPasswordHash: testHash, SMTPServer: r.upAddr, SMTPSecurity: config.SecurityNone,
		SendAs: o.sendAs, SMTPRate: o.rate,
	}
	if o.tls {
		r.cfg.SMTPSecurity = config.SecurityTLS
		r.cfg.CAFile = filepath.Join(dir, "ca.pem")
		os.WriteFile(r.cfg.CAFile, r.up.CertPEM, 0o600)
	}
	log := slog.New(slog.NewTextHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	store := &auth.Store{Dir: dir}
	store.Save("support", &auth.Grant{RefreshToken: idp.IssueRefreshToken("client", testMailbox), GrantedAt: time.Now()})
	var q *queue.Queue
	r.src, err = auth.NewSource(auth.SourceOptions{Account: r.cfg, Store: store, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	creds, err := auth.NewAccount(r.cfg, r.src)
	if err != nil {
		t.Fatal(err)
	}
	retry := o.retryMin
	if retry == 0 {
		retry = 20 * time.Millisecond
	}
	q, err = queue.Open(queue.Options{
		Dir: filepath.Join(dir, "queue"), Logger: log, Hostname: "relayd.test",
		Accounts: func(name string) *auth.Account {
			if name == "support" {
				return creds
			}
			return nil
		},
		RetryMin: retry, RetryMax: 4 * retry,
		OnEvent: func(e queue.Event) { r.events <- e },
	})
	if err != nil {
		t.Fatal(err)
	}
	r.q = q
	srv := NewSMTPServer(SMTPOptions{Users: auth.NewUsers([]*config.Account{r.cfg}), Queue: q, Logger: log,
		Hostname: "relayd.test", MaxMessageSize: o.maxSize, AuthFailureDelay: -1})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	qdone := make(chan struct{})
	go func() { q.Run(ctx); close(qdone) }()
	sdone := make(chan struct{})
	go func() { srv.Serve(ln); close(sdone) }()
	t.Cleanup(func() {
		srv.Close()
		<-sdone
		cancel()
		<-qdone
		if n := srv.Panics.Load(); n != 0 {
			t.Errorf("%d panics in SMTP sessions", n)
		}
		if t.Failed() {
			t.Logf("relayd log:\n%s", r.logs.String())
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

// waitEvent waits for a queue event of kind.
func (r *smtpRelay) waitEvent(kind queue.EventKind) queue.Event {
	r.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		select {
		case e := <-r.events:
			if e.Kind == kind {
				return e
			}
		case <-timeout:
			r.t.Fatalf("no %q queue event within 15s", kind)
		}
	}
}

// waitDelivered waits for n "delivered" events: the upstream accepted the
// messages and the queue removed them.
func (r *smtpRelay) waitDelivered(n int) {
	r.t.Helper()
	for i := 0; i < n; i++ {
		r.waitEvent("delivered")
	}
}

// waitMessages waits until the upstream accepted n messages.
func (r *smtpRelay) waitMessages(n int) []testkit.Message {
	r.t.Helper()
	timeout := time.After(15 * time.Second)
	for {
		if m := r.up.Messages(); len(m) >= n {
			return m
		}
		select {
		case <-r.up.Arrived():
		case <-timeout:
			r.t.Fatalf("upstream has %d messages after 15s, want %d", len(r.up.Messages()), n)
		}
	}
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

func TestSMTPConnectionReuse(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{})
	if _, err := r.q.Hold("support"); err != nil { // nothing is delivered until Release
		t.Fatal(err)
	}
	c := r.client()
	for i := 0; i < 9; i++ {
		if err := r.send(c, smtpSender, []string{fmt.Sprintf("r%d@example.net", i)}, []byte("Subject: reuse\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if st := r.q.Stats("support"); st.Held != 9 || r.up.Connections() != 0 {
		t.Fatalf("while held: %+v, %d connections", st, r.up.Connections())
	}
	if _, err := r.q.Release("support"); err != nil {
		t.Fatal(err)
	}
	got := r.waitMessages(9)
	conns := map[int64]int{}
	for _, m := range got {
		conns[m.Conn]++
	}
	if n := r.up.Connections(); n > 3 || len(conns) > 3 {
		t.Errorf("9 messages used %d connections (%v); want at most 3, reused", n, conns)
	}
	if len(conns) == 9 {
		t.Error("no connection carried more than one message")
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

// Upstream down: mail is accepted and queued; once the upstream is back,
// a probe delivers it: nothing lost, nothing duplicated.
func TestSMTPOutage(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{upDown: true})
	c := r.client()
	for i := 0; i < 3; i++ {
		if err := r.send(c, smtpSender, []string{fmt.Sprintf("o%d@example.net", i)}, []byte("Subject: outage\r\n\r\nx\r\n")); err != nil {
			t.Fatalf("submission during the outage = %v", err)
		}
	}
	r.waitEvent("deferred")
	st := r.q.Stats("support")
	if !st.Outage || st.Queued != 3 || st.LastError == "" {
		t.Errorf("stats during the outage = %+v", st)
	}
	up, err := testkit.NewSMTPUpstream(r.idp, testkit.SMTPOptions{Addr: r.upAddr})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	r.up = up
	r.waitDelivered(3)
	got := r.up.Messages()
	seen := map[string]int{}
	for _, m := range got {
		seen[m.To[0]]++
	}
	for i := 0; i < 3; i++ {
		if n := seen[fmt.Sprintf("o%d@example.net", i)]; n != 1 {
			t.Errorf("message %d delivered %d times", i, n)
		}
	}
	if st := r.q.Stats("support"); st.Outage || st.Queued != 0 {
		t.Errorf("stats after recovery = %+v", st)
	}
}

// A revoked grant holds the account's mail without bouncing it; a grant
// handed over drains it at once.
func TestSMTPRevokedGrantHoldsThenDrains(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{retryMin: time.Hour}) // no retry would come by itself
	r.idp.Revoke(testMailbox)
	c := r.client()
	if err := r.send(c, smtpSender, []string{"held1@example.net"}, []byte("Subject: held\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitEvent("held")
	if err := r.send(c, smtpSender, []string{"held2@example.net"}, []byte("Subject: held\r\n\r\ny\r\n")); err != nil {
		t.Fatalf("submission while held = %v", err)
	}
	st := r.q.Stats("support")
	if st.Hold == nil || st.Hold.State != health.StateNeedsReauth || !strings.Contains(st.Hold.Advice, "relayd authorize support") || st.Held != 2 {
		t.Fatalf("stats while held = %+v", st)
	}
	for _, e := range r.q.List() {
		if e.Attempts != 0 || e.State != queue.StateHeld {
			t.Errorf("held message %s: attempts %d state %s; want 0 attempts, held", e.ID, e.Attempts, e.State)
		}
	}
	if n := len(r.up.Messages()); n != 0 {
		t.Fatalf("%d messages (bounces?) reached the upstream while held", n)
	}
	g, err := auth.ImportRefreshToken(context.Background(), r.cfg, nil, r.idp.IssueRefreshToken("client", testMailbox))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.src.Install(g); err != nil {
		t.Fatal(err)
	}
	r.waitDelivered(2)
	got := r.up.Messages()
	for _, m := range got {
		if strings.Contains(string(m.Data), "Undelivered") {
			t.Errorf("a bounce was sent: %q", m.Data[:100])
		}
	}
	if st := r.q.Stats("support"); st.Hold != nil || st.Queued+st.Held != 0 {
		t.Errorf("stats after the grant = %+v", st)
	}
}

// An upstream that refuses the token with 535 5.7.8 (Gmail) after a
// refresh holds the account as needs_reauth.
func TestSMTP535HoldsAccount(t *testing.T) {
	for _, tc := range []struct {
		name   string
		reply  *smtp.SMTPError
		state  health.State
		advice string
	}{
		{"5.7.8", &smtp.SMTPError{Code: 535, EnhancedCode: smtp.EnhancedCode{5, 7, 8}, Message: "Username and Password not accepted."}, health.StateNeedsReauth, "relayd authorize support"},
		{"5.7.139", testkit.ErrSMTPAuthDisabled, health.StateNeedsAdmin, "Set-CASMailbox -Identity support@example.com -SmtpClientAuthenticationDisabled $false"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newSMTPRelay(t, smtpRelayOpts{retryMin: time.Hour})
			r.up.FailAuth(tc.reply)
			c := r.client()
			if err := r.send(c, smtpSender, []string{"x@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
				t.Fatal(err)
			}
			r.waitEvent("held")
			st := r.q.Stats("support")
			if st.Hold == nil || st.Hold.State != tc.state || !strings.Contains(st.Hold.Advice, tc.advice) {
				t.Fatalf("hold = %+v, want %s with %q", st.Hold, tc.state, tc.advice)
			}
			r.up.FailAuth(nil)
			g, _ := auth.ImportRefreshToken(context.Background(), r.cfg, nil, r.idp.IssueRefreshToken("client", testMailbox))
			r.src.Install(g)
			r.waitMessages(1)
		})
	}
}

// A permanent failure for one recipient: the others are delivered, a DSN
// goes to the sender from the mailbox, and the message stays as failed.
func TestSMTPPermanentFailureDSN(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{})
	r.up.RejectRecipient("nobody@example.net", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "Recipient address rejected: User unknown"})
	c := r.client()
	orig := []byte("Subject: partly\r\nMessage-ID: <p1@example.com>\r\n\r\nx\r\n")
	if err := r.send(c, smtpSender, []string{"ok@example.net", "nobody@example.net"}, orig); err != nil {
		t.Fatal(err)
	}
	r.waitEvent("failed")
	r.waitDelivered(1) // the DSN
	got := r.up.Messages()
	var dsn *testkit.Message
	for i := range got {
		if got[i].To[0] == smtpSender {
			dsn = &got[i]
		} else if len(got[i].To) != 1 || got[i].To[0] != "ok@example.net" {
			t.Errorf("message delivered to %v", got[i].To)
		}
	}
	if dsn == nil {
		t.Fatal("no DSN reached the sender")
	}
	for _, want := range []string{"multipart/report; report-type=delivery-status", "Final-Recipient: rfc822; nobody@example.net",
		"Action: failed", "Status: 5.1.1", "Diagnostic-Code: smtp; 550 5.1.1 Recipient address rejected", "Message-ID: <p1@example.com>"} {
		if !strings.Contains(string(dsn.Data), want) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Data)
		}
	}
	if dsn.From != smtpSender {
		t.Errorf("DSN MAIL FROM %q, want the mailbox", dsn.From)
	}
	l := r.q.List()
	if len(l) != 1 || l[0].State != queue.StateFailed {
		t.Fatalf("queue = %+v, want the message as failed", l)
	}
	// retry puts it back; delete removes it.
	r.up.RejectRecipient("nobody@example.net", nil)
	if err := r.q.Retry(l[0].ID); err != nil {
		t.Fatal(err)
	}
	r.waitMessages(3)
	r.waitEvent("delivered")
	if l := r.q.List(); len(l) != 0 {
		t.Errorf("after retry: %+v", l)
	}
}

// A DSN that itself fails produces no further DSN.
func TestSMTPNoDSNForDSN(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{})
	bad := &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no"}
	r.up.RejectRecipient("nobody@example.net", bad)
	r.up.RejectRecipient(smtpSender, bad) // the DSN's recipient
	c := r.client()
	if err := r.send(c, smtpSender, []string{"nobody@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	r.waitEvent("failed")
	r.waitEvent("failed") // the DSN
	if l := r.q.List(); len(l) != 2 {
		t.Errorf("queue holds %d entries, want the message and its failed DSN", len(l))
	}
	if n := len(r.up.Messages()); n != 0 {
		t.Errorf("%d messages delivered", n)
	}
}

// 4xx replies and provider throttles are retried on schedule, never bounced.
func TestSMTPTemporaryFailuresRetried(t *testing.T) {
	for _, reply := range []*smtp.SMTPError{
		{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "Temporary server error"},
		{Code: 554, EnhancedCode: smtp.EnhancedCode{5, 2, 0}, Message: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"},
		{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 4, 5}, Message: "Daily user sending limit exceeded."},
		{Code: 432, EnhancedCode: smtp.EnhancedCode{4, 3, 2}, Message: "Concurrent connections limit exceeded."},
	} {
		t.Run(reply.Message, func(t *testing.T) {
			r := newSMTPRelay(t, smtpRelayOpts{})
			r.up.FailData(reply)
			c := r.client()
			if err := r.send(c, smtpSender, []string{"x@example.net"}, []byte("Subject: x\r\n\r\nx\r\n")); err != nil {
				t.Fatal(err)
			}
			r.waitEvent("deferred")
			e := r.q.List()[0]
			if e.Attempts != 1 || e.State != queue.StateQueued || !strings.Contains(e.LastError, reply.Message) {
				t.Errorf("after the failure: %+v", e)
			}
			r.up.FailData(nil)
			r.waitEvent("delivered")
			if got := r.waitMessages(1); len(got) != 1 {
				t.Errorf("%d messages", len(got))
			}
		})
	}
}

// failingFS fails the spool's directory fsync.
type failingFS struct{ queue.OSFS }

func (failingFS) SyncDir(string) error { return fmt.Errorf("injected: no space left on device") }

// A spool failure is a 452 4.3.1 to the client, and leaves nothing queued.
func TestSMTPSpoolFailureIs452(t *testing.T) {
	dir := t.TempDir()
	cfg := &config.Account{Name: "support", Provider: "password", Email: testMailbox, Login: testMailbox,
		LocalUser: testUser, LocalPasswordHash: testHash, Direction: config.DirBoth,
		SMTPServer: "127.0.0.1:1", SMTPSecurity: config.SecurityNone}
	q, err := queue.Open(queue.Options{Dir: filepath.Join(dir, "q"), FS: failingFS{},
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Accounts: func(string) *auth.Account { return &auth.Account{Config: cfg} }})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewSMTPServer(SMTPOptions{Users: auth.NewUsers([]*config.Account{cfg}), Queue: q,
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
	msgs, _ := filepath.Glob(filepath.Join(dir, "q", "*.msg"))
	metas, _ := filepath.Glob(filepath.Join(dir, "q", "*.json"))
	temps, _ := filepath.Glob(filepath.Join(dir, "q", "tmp", "*"))
	if files := append(append(msgs, metas...), temps...); len(files) != 0 {
		t.Errorf("spool after the failure: %v", files)
	}
}

// Delivery over STARTTLS, as Office 365's port 587 wants.
func TestSMTPStartTLSUpstream(t *testing.T) {
	idp := testkit.StartIdP(t)
	up, err := testkit.NewSMTPUpstream(idp, testkit.SMTPOptions{STARTTLS: true})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	os.WriteFile(ca, up.CertPEM, 0o600)
	cfg := &config.Account{Name: "support", Provider: "custom", Email: testMailbox, Login: testMailbox,
		ClientID: "client", TokenURL: idp.TokenURL(), Grant: config.GrantRefreshToken, Direction: config.DirBoth,
		SMTPServer: up.Addr, SMTPSecurity: config.SecuritySTARTTLS, CAFile: ca}
	store := &auth.Store{Dir: dir}
	store.Save("support", &auth.Grant{RefreshToken: idp.IssueRefreshToken("client", testMailbox)})
	src, _ := auth.NewSource(auth.SourceOptions{Account: cfg, Store: store})
	creds, err := auth.NewAccount(cfg, src)
	if err != nil {
		t.Fatal(err)
	}
	q, err := queue.Open(queue.Options{Dir: filepath.Join(dir, "q"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Accounts: func(string) *auth.Account { return creds }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if _, err := q.Submit(&queue.Submission{Account: "support", From: testMailbox, To: []string{"x@example.net"},
		Body: strings.NewReader("Subject: starttls\r\n\r\nx\r\n")}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-up.Arrived():
	case <-time.After(15 * time.Second):
		t.Fatal("not delivered over STARTTLS")
	}
	if up.Logins.Load() != 1 {
		t.Errorf("logins = %d", up.Logins.Load())
	}
}

// smtp_rate spaces deliveries: Exchange Online takes 30 messages a minute
// per mailbox; here 600 a minute, so at least 100 ms apart.
func TestSMTPRateLimit(t *testing.T) {
	r := newSMTPRelay(t, smtpRelayOpts{rate: 600})
	if _, err := r.q.Hold("support"); err != nil {
		t.Fatal(err)
	}
	c := r.client()
	for i := 0; i < 4; i++ {
		if err := r.send(c, smtpSender, []string{fmt.Sprintf("r%d@example.net", i)}, []byte("Subject: rate\r\n\r\nx\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	r.q.Release("support")
	got := r.waitMessages(4)
	var at []time.Time
	for _, m := range got {
		at = append(at, m.At)
	}
	sort.Slice(at, func(i, j int) bool { return at[i].Before(at[j]) })
	if span := at[3].Sub(at[0]); span < 3*100*time.Millisecond-20*time.Millisecond {
		t.Errorf("4 messages delivered within %v; smtp_rate 600/min needs at least 300ms", span)
	}
}
