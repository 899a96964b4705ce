package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/provider"
)

// smtpEnv is a relayd configuration for outgoing mail to a fake
// XOAUTH2-only submission server.
type smtpEnv struct {
	*env
	smtpAddr string
	smtpUp   *testkit.SMTPUpstream
}

func newSMTPEnv(t *testing.T, upAddr string) *smtpEnv {
	t.Helper()
	e := newEnv(t)
	up, err := testkit.NewSMTPUpstream(e.idp, testkit.SMTPOptions{Addr: upAddr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	smtpAddr := e.writeSMTPConfig(up.Addr, "50ms", "200ms")
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	return &smtpEnv{env: e, smtpAddr: smtpAddr, smtpUp: up}
}

// localHash is the bcrypt hash of localPassword.
func localHash() string {
	h, _ := bcrypt.GenerateFromPassword([]byte(localPassword), bcrypt.MinCost)
	return string(h)
}

// writeSMTPConfig writes a configuration with one outgoing account that
// delivers to smtpServer, and returns relayd's SMTP listen address.
func (e *env) writeSMTPConfig(smtpServer, retryMin, retryMax string) string {
	e.t.Helper()
	smtpAddr, _ := realserver.FreeAddr()
	e.conf.SMTPListen = []string{smtpAddr}
	e.conf.RetryMin, e.conf.RetryMax = retryMin, retryMax
	e.conf.LogLevel = ""
	a := &e.conf.Accounts[0]
	a.IMAPServer, a.SMTPServer, a.Direction = "", smtpServer, "outgoing"
	e.writeConfig()
	return smtpAddr
}

// start runs relayd serve with extra environment, returning once it listens.
func (e *smtpEnv) start(extraEnv ...string) *daemonProc {
	e.t.Helper()
	return e.serveEnv(extraEnv)
}

var messageIDRe = regexp.MustCompile(`(?m)^Message-ID: (<[^>]+>)`)

// Every message that got a 250 reaches the upstream, whatever moment relayd
// is killed with SIGKILL at: at random points and at named failpoints.
func TestCrashSafety(t *testing.T) {
	rounds := 100
	if testing.Short() {
		rounds = 20
	}
	e := newSMTPEnv(t, "")
	crashRounds(t, e, rounds, 3, e.smtpUp.Arrived(), func() [][]byte {
		var l [][]byte
		for _, m := range e.smtpUp.Messages() {
			l = append(l, m.Data)
		}
		return l
	})
}

// The same on the Microsoft Graph path: every message acknowledged with
// 250 reaches Graph, through SIGKILLs at random points and at the
// spool's and the transport's failpoints.
func TestCrashSafetyGraph(t *testing.T) {
	e := newEnv(t)
	graph := testkit.StartGraph(t, e.idp)
	smtpAddr := e.writeSMTPConfig("", "50ms", "200ms")
	a := &e.conf.Accounts[0]
	a.Transport, a.GraphURL = "graph", graph.URL
	e.writeConfig()
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	ge := &smtpEnv{env: e, smtpAddr: smtpAddr}
	crashRounds(t, ge, 20, provider.GraphConcurrency, graph.Arrived(), func() [][]byte {
		var l [][]byte
		for _, m := range graph.Sent() {
			l = append(l, m.MIME)
		}
		return l
	})
}

// crashRounds submits through relayd and kills it with SIGKILL, rounds
// times (RELAYD_CRASH_ROUNDS overrides), then checks that every message
// acknowledged reached the upstream, whose messages sent returns, with at
// most maxDups duplicates per kill (one per delivery in flight: SMTP
// connections, or Graph requests).
func crashRounds(t *testing.T, e *smtpEnv, rounds, maxDups int, arrived <-chan struct{}, sent func() [][]byte) {
	if s := os.Getenv("RELAYD_CRASH_ROUNDS"); s != "" {
		rounds, _ = strconv.Atoi(s)
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("RELAYD_CRASH_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("crash test: %d rounds, seed %d (RELAYD_CRASH_SEED=%d to replay)", rounds, seed, seed)
	rng := rand.New(rand.NewPCG(seed, seed))

	var mu sync.Mutex
	acked := map[string]bool{} // Message-IDs that got a 250
	failpoints := []string{"after-write", "after-sync", "after-upstream-250"}
	kills := 0
	for round := 0; round < rounds; round++ {
		var fp string
		if round%2 == 1 {
			fp = fmt.Sprintf("%s:%d", failpoints[(round/2)%len(failpoints)], 1+rng.IntN(5))
		}
		env := []string{}
		if fp != "" {
			env = append(env, "RELAYD_FAILPOINT="+fp)
		}
		d := e.start(env...)
		done := make(chan struct{})
		go func() {
			defer close(done)
			e.submitUntilError(round, func(id string) {
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			})
		}()
		if fp == "" {
			// A random moment: during submissions and deliveries.
			time.Sleep(time.Duration(10+rng.IntN(200)) * time.Millisecond)
			d.cmd.Process.Signal(syscall.SIGKILL)
		}
		select {
		case <-d.exited:
		case <-time.After(30 * time.Second):
			// The failpoint was not reached in time: kill anyway.
			d.cmd.Process.Signal(syscall.SIGKILL)
			<-d.exited
		}
		kills++
		<-done
	}
	// A last start drains what is left.
	last := e.start()
	mu.Lock()
	want := len(acked)
	mu.Unlock()
	deadline := time.After(60 * time.Second)
	for {
		got := map[string]int{}
		for _, data := range sent() {
			if id := messageIDRe.FindSubmatch(data); id != nil {
				got[string(id[1])]++
			}
		}
		missing := 0
		for id := range acked {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			dups := 0
			for _, n := range got {
				dups += n - 1
			}
			t.Logf("%d rounds, %d kills, %d messages acknowledged, all delivered; %d duplicates (%.2f per kill; at most %d per kill are allowed: one per delivery in flight)",
				rounds, kills, want, dups, float64(dups)/float64(kills), maxDups)
			if dups > maxDups*kills {
				t.Errorf("%d duplicates for %d kills", dups, kills)
			}
			if want < rounds {
				t.Errorf("only %d messages acknowledged over %d rounds: the test did not exercise relayd", want, rounds)
			}
			return
		}
		select {
		case <-arrived:
		case <-deadline:
			t.Fatalf("%d of %d acknowledged messages never reached the upstream\nlast relayd log:\n%s", missing, want, last.stderr.String())
		}
	}
}

// submitUntilError sends messages over one connection until relayd dies,
// reporting the Message-ID of each message it acknowledged.
func (e *smtpEnv) submitUntilError(round int, ack func(id string)) {
	c, err := smtp.Dial(e.smtpAddr)
	if err != nil {
		return
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "helpdesk", localPassword)); err != nil {
		return
	}
	for i := 0; ; i++ {
		id := fmt.Sprintf("<crash-%d-%d@test>", round, i)
		msg := fmt.Sprintf("Subject: crash %d/%d\r\nMessage-ID: %s\r\n\r\n%s\r\n", round, i, id, strings.Repeat("x", 2000))
		if err := c.Mail(mbox, nil); err != nil {
			return
		}
		if err := c.Rcpt(fmt.Sprintf("r%d@example.net", i%3), nil); err != nil {
			return
		}
		w, err := c.Data()
		if err != nil {
			return
		}
		if _, err := w.Write([]byte(msg)); err != nil {
			return
		}
		if err := w.Close(); err != nil {
			if os.Getenv("RELAYD_CRASH_DEBUG") != "" {
				fmt.Println("submit:", err)
			}
			return
		}
		ack(id)
	}
}

// swaks, a real SMTP client, submits through a real relayd process; the
// queue is visible and manageable with relayd queue.
func TestSwaksAndQueueCommands(t *testing.T) {
	swaks := realserver.RequireBinary(t, "swaks", "swaks")
	e := newSMTPEnv(t, "")
	e.smtpUp.FailData(&smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"})
	d := e.start()
	_ = d
	host, port, _ := strings.Cut(e.smtpAddr, ":")
	cmd := exec.Command(swaks, "--server", host, "--port", port, "--auth", "LOGIN",
		"--auth-user", "helpdesk", "--auth-password", localPassword,
		"--from", mbox, "--to", "someone@example.net", "--header", "Subject: swaks test", "--body", "hello from swaks")
	out, err := cmd.CombinedOutput()
	e.record("swaks", out)
	if err != nil || !strings.Contains(string(out), "250 2.0.0 queued as ") {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	id := regexp.MustCompile(`queued as (\S+)`).FindStringSubmatch(string(out))[1]

	// list shows it with the upstream's temporary error.
	var listed string
	for i := 0; i < 50; i++ {
		listed, _ = e.run("queue", "-c", e.cfg, "list")
		if strings.Contains(listed, "451 4.3.0 try later") {
			break
		}
		select { // the next delivery attempt, or a moment
		case <-e.smtpUp.Attempted():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if !strings.Contains(listed, id) || !strings.Contains(listed, "someone@example.net") {
		t.Fatalf("queue list:\n%s", listed)
	}
	if out, code := e.run("queue", "-c", e.cfg, "hold", "support"); code != 0 || !strings.Contains(out, `account "support": held`) {
		t.Errorf("queue hold: %d %s", code, out)
	}
	out2, _ := e.run("queue", "-c", e.cfg, "list", "--json")
	if !strings.Contains(out2, `"state":"held"`) {
		t.Errorf("queue list --json after hold:\n%s", out2)
	}
	show, code := e.run("queue", "-c", e.cfg, "show", id)
	if code != 0 || !strings.Contains(show, "hello from swaks") || !strings.Contains(show, `"account": "support"`) {
		t.Errorf("queue show:\n%s", show)
	}
	e.smtpUp.FailData(nil)
	if out, code := e.run("queue", "-c", e.cfg, "release", "support"); code != 0 {
		t.Errorf("queue release: %s", out)
	}
	select {
	case <-e.smtpUp.Arrived():
	case <-time.After(20 * time.Second):
		t.Fatal("released message not delivered")
	}
	m := e.smtpUp.Messages()
	if len(m) != 1 || !strings.Contains(string(m[0].Data), "hello from swaks") {
		t.Fatalf("upstream got %d messages", len(m))
	}
	if out, code := e.run("queue", "-c", e.cfg, "delete", "no-such-id"); code == 0 || !strings.Contains(out, "no such message") {
		t.Errorf("queue delete of an unknown ID: %d %s", code, out)
	}
}

// Without a daemon, relayd queue works on the spool itself.
func TestQueueCommandsOffline(t *testing.T) {
	e := newSMTPEnv(t, "")
	if out, code := e.run("queue", "-c", e.cfg, "list"); code != 0 || !strings.Contains(out, "Mail queue is empty") {
		t.Errorf("offline list: %d %s", code, out)
	}
	if out, code := e.run("queue", "-c", e.cfg, "hold", "support"); code != 0 || !strings.Contains(out, `account "support": held`) {
		t.Errorf("offline hold: %d %s", code, out)
	}
	// The hold is on disk: a daemon started now keeps the mail.
	e.start()
	c, err := smtp.Dial(e.smtpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "helpdesk", localPassword)); err != nil {
		t.Fatal(err)
	}
	if err := c.SendMail(mbox, []string{"x@example.net"}, strings.NewReader("Subject: held\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	out, _ := e.run("queue", "-c", e.cfg, "list")
	if !strings.Contains(out, "1 message(s): 0 queued, 1 held") {
		t.Errorf("after an offline hold, the daemon's list:\n%s", out)
	}
}
