package daemon

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

const (
	mailbox  = "support@example.com"
	user     = "helpdesk"
	password = "local-Pw-daemon-1"
)

// faults panics once at each armed failpoint.
type faults struct {
	mu    sync.Mutex
	armed map[string]int
}

func (f *faults) arm(point string) {
	f.mu.Lock()
	f.armed[point]++
	f.mu.Unlock()
}

func (f *faults) hit(point string) {
	f.mu.Lock()
	n := f.armed[point]
	if n > 0 {
		f.armed[point] = n - 1
	}
	f.mu.Unlock()
	if n > 0 {
		panic("injected fault at " + point)
	}
}

type testDaemon struct {
	t      testing.TB
	d      *Daemon
	idp    *testkit.IdP
	imapUp *testkit.IMAPUpstream
	pop3Up *testkit.POP3Upstream
	smtpUp *testkit.SMTPUpstream
	// graph serves the account when an edit sets transport = "graph".
	graph  *testkit.Graph
	faults *faults
	events chan queue.Event
	logs   *testkit.SyncBuffer
}

func startDaemon(t testing.TB, edit ...func(*testkit.Config, *Options)) *testDaemon {
	t.Helper()
	b := relaytest.New(t)
	idp := b.IdP
	imapUp := b.IMAPUpstream(testkit.IMAPOptions{Style: testkit.Google})
	imapUp.AddUser(mailbox)
	smtpUp := b.SMTPUpstream(testkit.SMTPOptions{Style: testkit.Exchange})
	pop3Up := b.POP3Upstream(testkit.POP3Options{Style: testkit.Exchange})
	pop3Up.AddUser(mailbox)
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	tc := testkit.Config{
		StateDir: b.Store.Dir, StatusSocket: filepath.Join(b.Dir, "status.sock"),
		IMAPListen: []string{"127.0.0.1:0"}, SMTPListen: []string{"127.0.0.1:0"},
		RetryMin: "20ms", RetryMax: "100ms",
		Accounts: []testkit.Account{{
			Name: "support", Provider: "custom", Email: mailbox, ClientID: "client", TokenURL: idp.TokenURL(),
			DeviceAuthURL: idp.DeviceAuthURL(), Issuer: idp.IssuerURL(),
			IMAPServer: imapUp.Addr, SMTPServer: smtpUp.Addr, POP3Server: pop3Up.Addr, Security: "none",
			LocalUser: user, LocalPasswordHash: string(hash),
		}},
	}
	td := &testDaemon{t: t, idp: idp, imapUp: imapUp, pop3Up: pop3Up, smtpUp: smtpUp, graph: testkit.StartGraph(t, idp), faults: &faults{armed: map[string]int{}},
		events: make(chan queue.Event, 1000), logs: b.Logs}
	opts := Options{
		Logger:           b.Log,
		AuthFailureDelay: -1,
		OnQueueEvent:     func(e queue.Event) { td.events <- e },
	}
	t.Cleanup(fault.Arm(td.faults.hit))
	for _, fn := range edit {
		fn(&tc, &opts)
	}
	for i := range tc.Accounts {
		if a := &tc.Accounts[i]; a.Transport == "graph" && a.GraphURL == "" {
			a.GraphURL = td.graph.URL
		}
	}
	cfg, err := config.Parse(tc.TOML())
	if err != nil {
		t.Fatal(err)
	}
	b.Grant("support", "client", mailbox)
	td.d, err = New(cfg, opts)
	if err != nil {
		t.Fatalf("New() = %v", err)
	}
	td.d.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		td.d.Shutdown(ctx)
	})
	return td
}

func (td *testDaemon) imapLogin() error {
	c, err := imapclient.DialInsecure(td.d.IMAPAddrs()[0], nil)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Login(user, password).Wait(); err != nil {
		return err
	}
	_, err = c.Select("INBOX", nil).Wait()
	return err
}

// send submits a message; the error is the server's reply when refused.
func (td *testDaemon) send(to, body string) error {
	c, err := smtp.Dial(td.d.SMTPAddrs()[0])
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", user, password)); err != nil {
		return err
	}
	return c.SendMail(mailbox, []string{to}, strings.NewReader("Subject: t\r\n\r\n"+body+"\r\n"))
}

// waitEvent waits for a queue event of kind.
func (td *testDaemon) waitEvent(kind queue.EventKind) queue.Event {
	td.t.Helper()
	return testkit.Await(td.t, td.events, "queue event "+string(kind), 15*time.Second, func(e queue.Event) bool { return e.Kind == kind })
}

func (td *testDaemon) delivered(body string) bool {
	for _, m := range td.smtpUp.Messages() {
		if strings.Contains(string(m.Data), body) {
			return true
		}
	}
	return false
}

// A panic in every long-lived part — an IMAP session, an SMTP session, a
// token refresh, one message's delivery, a bounce, a status request — is
// recovered, logged with its stack and counted; the daemon keeps serving
// and no queued message is lost.
func TestDaemonSurvivesPanics(t *testing.T) {
	td := startDaemon(t)

	td.faults.arm("imap-session")
	if err := td.imapLogin(); err == nil {
		t.Fatal("the session with the injected fault logged in")
	}
	if err := td.imapLogin(); err != nil {
		t.Fatalf("IMAP login after a session's panic = %v", err)
	}

	td.faults.arm("smtp-data")
	err := td.send("first@example.net", "first try")
	var se *smtp.SMTPError
	if !errors.As(err, &se) || se.Code != 451 {
		t.Fatalf("submission with a fault = %v, want 451 (the client keeps the message)", err)
	}

	// The next message's delivery panics: it is held with the reason, and
	// the rest of the queue flows.
	td.faults.arm("deliver")
	if err := td.send("first@example.net", "poison message"); err != nil {
		t.Fatalf("resubmission = %v", err)
	}
	held := td.waitEvent(queue.EventHeld)
	if err := td.send("second@example.net", "healthy message"); err != nil {
		t.Fatal(err)
	}
	td.waitEvent(queue.EventDelivered)
	if !td.delivered("healthy message") || td.delivered("poison message") {
		t.Fatalf("upstream has %d messages; want only the healthy one", len(td.smtpUp.Messages()))
	}
	e, err := td.d.Queue().Get(held.ID)
	if err != nil || !e.AdminHold || !strings.Contains(e.LastError, "internal error") {
		t.Fatalf("poison message = %+v, %v; want it held with the reason", e, err)
	}
	if _, err := td.d.Queue().Release(held.ID); err != nil {
		t.Fatal(err)
	}
	td.waitEvent(queue.EventDelivered)
	if !td.delivered("poison message") {
		t.Fatal("the held message was lost")
	}

	// A bounce whose building panics: the failed message stays for the
	// admin, and mail keeps flowing.
	td.smtpUp.RejectRecipient("nobody@example.net", &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "User unknown"})
	td.faults.arm("dsn")
	if err := td.send("nobody@example.net", "to nobody"); err != nil {
		t.Fatal(err)
	}
	failed := td.waitEvent(queue.EventFailed)
	if e, err := td.d.Queue().Get(failed.ID); err != nil || e.State != queue.StateFailed {
		t.Errorf("failed message = %+v, %v; want it kept as failed", e, err)
	}

	// A token refresh that panics fails that login only.
	td.idp.ExpireAccessTokens()
	td.faults.arm("refresh")
	if err := td.imapLogin(); err == nil {
		t.Fatal("login during a refresh's panic succeeded")
	}
	if err := td.imapLogin(); err != nil {
		t.Fatalf("IMAP login after a refresh's panic = %v", err)
	}

	st := td.d.Status()
	if st.Panics < 5 || st.Accounts[0].Panics < 4 {
		t.Errorf("status counts %d panics (account: %d); want every one", st.Panics, st.Accounts[0].Panics)
	}
	if n := strings.Count(td.logs.String(), "internal error recovered"); n != 5 {
		t.Errorf("%d panics logged, want 5", n)
	}
	if !strings.Contains(td.logs.String(), "goroutine") {
		t.Error("no stack trace in the log")
	}
	if st.Accounts[0].Queue.Queued != 0 || st.Accounts[0].Queue.Failed != 1 {
		t.Errorf("queue = %+v; want nothing waiting, one failed", st.Accounts[0].Queue)
	}
}
