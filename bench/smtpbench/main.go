// Command smtpbench measures relayd's SMTP path side by side with Postfix
// in the same run. relayd, Postfix (with Dovecot for SASL) and the clients
// (this program, which also hosts the fake identity provider and the fake
// upstream relayd delivers to) run as separate processes. Its defaults are
// the targets of the queue issue:
//
//   - acceptance: 8 concurrent clients on persistent connections sending
//     10 KB messages, every 250 durable, delivery held on both sides
//     (relayd: the account held; Postfix: defer_transports = smtp,
//     in_flow_delay = 0s), both queues on the same filesystem (target: at
//     least Postfix's rate);
//   - the time from a grant handed over to the first held message reaching
//     the upstream (target: under 1 s), and the drain of the 10,000 or so
//     messages held by then;
//   - startup recovery of a 100,000-message queue, and relayd queue list on
//     it (target: under 1 s).
//
// Run: go run ./bench/smtpbench (as root, with Debian's postfix and
// dovecot-imapd). -dir chooses the filesystem; tmpfs is refused.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/bench/internal/machine"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/status"
)

const (
	mailbox  = "support@example.com"
	password = "bench-local-pw"
	clientID = "bench"
)

var (
	baseDir    = flag.String("dir", "/var/tmp", "directory for the spools (same filesystem for both; not tmpfs)")
	clients    = flag.Int("clients", 8, "concurrent clients")
	perClient  = flag.Int("messages", 420, "messages per client per round")
	msgKB      = flag.Int("message-kb", 10, "message size in KB")
	rounds     = flag.Int("rounds", 3, "acceptance rounds per server, alternating")
	recoverN   = flag.Int("recover", 100000, "messages in the recovery queue")
	relaydPath = flag.String("relayd", "", "relayd binary (default: build ./cmd/relayd)")
	only       = flag.String("only", "accept,drain,recover", "comma-separated parts to run")
)

func enabled(name string) bool { return machine.Selected(*only, name) }

func main() {
	flag.Parse()
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Fatal("smtpbench: ", err)
	}
}

type bench struct {
	tmp      string
	bin      string
	idp      *testkit.IdP
	up       *testkit.SMTPUpstream
	dove     *realserver.Dovecot
	pf       *realserver.Postfix
	relayd   *exec.Cmd
	cfgFile  string
	cfg      *config.Config
	smtpAddr string
}

func run() error {
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(*baseDir, &sfs); err != nil {
		return err
	}
	if sfs.Type == 0x01021994 {
		return fmt.Errorf("%s is tmpfs: spool benchmarks need a real filesystem (-dir)", *baseDir)
	}
	b := &bench{}
	defer b.stop()
	var err error
	if b.tmp, err = os.MkdirTemp(*baseDir, "smtpbench-"); err != nil {
		return err
	}
	os.Chmod(b.tmp, 0o755)
	if b.idp, err = testkit.NewIdP(); err != nil {
		return err
	}
	b.idp.AddClient(clientID, "")
	if b.up, err = testkit.NewSMTPUpstream(b.idp, testkit.SMTPOptions{}); err != nil {
		return err
	}
	if b.bin, err = machine.Relayd(*relaydPath, b.tmp); err != nil {
		return err
	}
	report(b)
	if err := b.startRelayd("state", true); err != nil {
		return err
	}
	if enabled("accept") {
		if err := b.accept(); err != nil {
			return err
		}
	}
	if enabled("drain") {
		if err := b.drain(); err != nil {
			return err
		}
	}
	if enabled("recover") {
		if err := b.recovery(); err != nil {
			return err
		}
	}
	return nil
}

func report(b *bench) {
	fsType, _ := exec.Command("stat", "-f", "-c", "%T", b.tmp).Output()
	pv, _ := exec.Command("postconf", "-h", "mail_version").Output()
	fmt.Printf("# smtpbench %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("machine: %s\npostfix %s", machine.Describe(), pv)
	fmt.Printf("spools in %s (filesystem %s)\n", b.tmp, strings.TrimSpace(string(fsType)))
}

// startRelayd starts relayd with its state in DIR/stateName. With grant,
// the account gets a grant first.
func (b *bench) startRelayd(stateName string, grant bool) error {
	state := filepath.Join(b.tmp, stateName)
	var err error
	if b.smtpAddr, err = realserver.FreeAddr(); err != nil {
		return err
	}
	hash, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	text := testkit.Config{
		StateDir: state, StatusSocket: filepath.Join(state, "status.sock"), LogLevel: "info",
		SMTPListen: []string{b.smtpAddr}, RetryMin: "1s", RetryMax: "5s",
		Accounts: []testkit.Account{{
			Name: "support", Provider: "custom", Email: mailbox, ClientID: clientID, TokenURL: b.idp.TokenURL(),
			SMTPServer: b.up.Addr, Security: "none", SMTPConnections: 3, Direction: "outgoing",
			LocalUser: "bench", LocalPasswordHash: string(hash),
		}},
	}.TOML()
	b.cfgFile = filepath.Join(b.tmp, stateName+".toml")
	os.WriteFile(b.cfgFile, []byte(text), 0o600)
	if b.cfg, err = config.Parse(text); err != nil {
		return err
	}
	if grant {
		g, err := b.newGrant()
		if err != nil {
			return err
		}
		(&auth.Store{Dir: state}).Save("support", g)
	}
	return b.spawn()
}

func (b *bench) newGrant() (*auth.Grant, error) {
	return auth.ImportRefreshToken(context.Background(), b.cfg.Accounts[0], nil, b.idp.IssueRefreshToken(clientID, mailbox))
}

// spawn starts the relayd process and waits for its start line; it
// returns how long the start took.
func (b *bench) spawn() error {
	_, err := b.spawnTimed()
	return err
}

func (b *bench) spawnTimed() (time.Duration, error) {
	b.relayd = exec.Command(b.bin, "serve", "-c", b.cfgFile, "-grace", "1s")
	b.relayd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone with an interrupted run
	pr, pw := io.Pipe()
	b.relayd.Stderr = pw
	t0 := time.Now()
	if err := b.relayd.Start(); err != nil {
		return 0, err
	}
	started := make(chan time.Duration, 1)
	var logMu sync.Mutex
	var logText strings.Builder
	go func() {
		sc := bufio.NewScanner(pr)
		sent := false
		for sc.Scan() {
			logMu.Lock()
			logText.WriteString(sc.Text() + "\n")
			logMu.Unlock()
			if !sent && strings.Contains(sc.Text(), "relayd started") {
				started <- time.Since(t0)
				sent = true
			}
		}
	}()
	exited := make(chan struct{})
	go func() { b.relayd.Wait(); pw.Close(); close(exited) }()
	select {
	case d := <-started:
		return d, nil
	case <-exited:
		logMu.Lock()
		defer logMu.Unlock()
		return 0, fmt.Errorf("relayd exited: %s", logText.String())
	case <-time.After(5 * time.Minute):
		return 0, errors.New("relayd did not start")
	}
}

func (b *bench) stopRelayd() {
	if b.relayd != nil && b.relayd.Process != nil {
		b.relayd.Process.Signal(syscall.SIGTERM)
		for b.relayd.ProcessState == nil {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

func (b *bench) stop() {
	b.stopRelayd()
	if b.pf != nil {
		b.pf.Stop()
	}
	if b.dove != nil {
		b.dove.Stop()
	}
	if b.up != nil {
		b.up.Close()
	}
	if b.idp != nil {
		b.idp.Close()
	}
	if b.tmp != "" {
		os.RemoveAll(b.tmp)
	}
}

func (b *bench) status() *status.Client {
	return status.NewClient(b.cfg.StatusSocket)
}

// load sends clients×perClient messages to addr and returns messages/s.
func load(addr, user, pass string, round int) (float64, error) {
	body := strings.Repeat(strings.Repeat("x", 78)+"\r\n", *msgKB*1024/80)
	var wg sync.WaitGroup
	errs := make(chan error, *clients)
	t0 := time.Now()
	for c := 0; c < *clients; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cl, err := smtp.Dial(addr)
			if err != nil {
				errs <- err
				return
			}
			defer cl.Close()
			if err := cl.Hello("bench"); err != nil {
				errs <- err
				return
			}
			if err := cl.Auth(sasl.NewPlainClient("", user, pass)); err != nil {
				errs <- fmt.Errorf("AUTH: %w", err)
				return
			}
			for i := 0; i < *perClient; i++ {
				msg := fmt.Sprintf("From: <%s>\r\nTo: <to@example.net>\r\nSubject: bench %d/%d/%d\r\nMessage-ID: <b-%d-%d-%d@bench>\r\n\r\n%s",
					mailbox, round, c, i, round, c, i, body)
				if err := cl.SendMail(mailbox, []string{"to@example.net"}, strings.NewReader(msg)); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return 0, err
	}
	return float64(*clients**perClient) / time.Since(t0).Seconds(), nil
}

func (b *bench) accept() error {
	var err error
	if b.dove, err = realserver.RunDovecot(b.idp, realserver.DovecotOptions{Password: "pf-pw"}); err != nil {
		return err
	}
	if b.pf, err = realserver.RunPostfix(b.dove, realserver.PostfixOptions{Dir: b.tmp, DeferTransports: true}); err != nil {
		return err
	}
	if _, err := b.status().QueueOp(context.Background(), "hold", "support"); err != nil {
		return err
	}
	fmt.Printf("\n## Acceptance: %d clients x %d messages of %d KB per round, delivery held on both sides\n", *clients, *perClient, *msgKB)
	master := b.pf.MasterPID()
	if master == 0 {
		return errors.New("postfix: no master.pid")
	}
	n := float64(*clients * *perClient)
	var rr, pr, rcpu, pcpu []float64
	for round := 0; round < *rounds; round++ {
		c0 := machine.CPUSeconds(b.relayd.Process.Pid)
		r, err := load(b.smtpAddr, "bench", password, round)
		if err != nil {
			return fmt.Errorf("relayd: %w", err)
		}
		c1 := machine.CPUSeconds(b.relayd.Process.Pid)
		p0 := machine.TreeCPU(master)
		p, err := load(b.pf.SubmissionAddr, mailbox, "pf-pw", round)
		if err != nil {
			return fmt.Errorf("postfix: %w", err)
		}
		p1 := machine.TreeCPU(master)
		rr, pr = append(rr, r), append(pr, p)
		rcpu, pcpu = append(rcpu, (c1-c0)/n*1e6), append(pcpu, (p1-p0)/n*1e6)
	}
	r, p := machine.Median(rr), machine.Median(pr)
	fmt.Printf("relayd %.0f msg/s, Postfix %.0f msg/s, ratio %.2f (median of %d; relayd %s; Postfix %s)\n",
		r, p, r/p, *rounds, machine.All(rr), machine.All(pr))
	rc, pc := machine.Median(rcpu), machine.Median(pcpu)
	fmt.Printf("CPU per accepted message: relayd %.0f us, Postfix %.0f us (master and its processes), ratio %.2f (median of %d; relayd %s; Postfix %s)\n",
		rc, pc, rc/pc, *rounds, machine.All(rcpu), machine.All(pcpu))
	b.pf.Stop()
	b.pf = nil
	return nil
}

// drain: the held messages wait because the grant died; a grant handed
// over releases them.
func (b *bench) drain() error {
	ctx := context.Background()
	l, err := b.status().QueueList(ctx)
	if err != nil {
		return err
	}
	n := len(l)
	if n == 0 {
		return errors.New("drain: nothing queued (run with accept)")
	}
	// Kill the grant, then let relayd find out.
	b.idp.Revoke(mailbox)
	if _, err := b.status().QueueOp(ctx, "release", "support"); err != nil {
		return err
	}
	for {
		st, err := b.status().Status(ctx)
		if err != nil {
			return err
		}
		if st.Accounts[0].State == health.StateNeedsReauth {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	before := len(b.up.Messages())
	g, err := b.newGrant()
	if err != nil {
		return err
	}
	t0 := time.Now()
	if err := b.status().InstallGrant(ctx, "support", g); err != nil {
		return err
	}
	<-b.up.Arrived()
	first := time.Since(t0)
	for len(b.up.Messages())-before < n {
		select {
		case <-b.up.Arrived():
		case <-time.After(5 * time.Minute):
			return fmt.Errorf("drain stalled at %d of %d", len(b.up.Messages())-before, n)
		}
	}
	total := time.Since(t0)
	fmt.Printf("\n## Reauthorization and drain of %d held messages (3 upstream connections)\n", n)
	fmt.Printf("grant handed over -> first held message at the upstream: %d ms\n", first.Milliseconds())
	fmt.Printf("queue empty after %.1f s: %.0f msg/s to the upstream\n", total.Seconds(), float64(n)/total.Seconds())
	return nil
}

// noSyncFS writes the recovery fixture without fsyncs: it is test data.
type noSyncFS struct{ queue.FS }

func (n noSyncFS) Create(name string) (queue.File, error) {
	f, err := n.FS.Create(name)
	return noSyncFile{f}, err
}
func (n noSyncFS) CreateTemp(prefix string) (queue.File, error) {
	f, err := n.FS.CreateTemp(prefix)
	return noSyncFile{f}, err
}
func (noSyncFS) SyncDir() error { return nil }

type noSyncFile struct{ queue.File }

func (noSyncFile) Sync() error { return nil }

func (b *bench) recovery() error {
	b.stopRelayd()
	state := filepath.Join(b.tmp, "recover")
	sp, err := queue.OpenSpool(filepath.Join(state, "queue"), func(real queue.FS) queue.FS { return noSyncFS{real} })
	if err != nil {
		return err
	}
	body := "Subject: recovery\r\n\r\n" + strings.Repeat("y", 1000) + "\r\n"
	now := time.Now()
	for i := 0; i < *recoverN; i++ {
		e := &queue.Entry{ID: fmt.Sprintf("%s-%08d", now.UTC().Format("20060102T150405"), i), Account: "support",
			From: mailbox, Created: now, State: queue.StateQueued, NextAttempt: now,
			Recipients: []queue.Recipient{{Addr: "to@example.net", State: queue.RcptPending}}}
		if err := sp.Put(e, strings.NewReader(body)); err != nil {
			return err
		}
	}
	exec.Command("sync").Run()
	// No grant: the account is held, so relayd only recovers.
	if err := b.startRelayd("recover", false); err != nil {
		return err
	}
	b.stopRelayd()
	// Drop the page cache? Not as a benchmark default: report warm.
	startup, err := b.spawnTimed()
	if err != nil {
		return err
	}
	b.stopRelayd()
	// The first start after a boot also reads every message to check its
	// sum: forgetting the boot recorded makes this start one.
	os.Remove(filepath.Join(state, "queue", "recovered-boot.list"))
	afterBoot, err := b.spawnTimed()
	if err != nil {
		return err
	}
	fmt.Printf("\n## Startup recovery of a %d-message queue\n", *recoverN)
	fmt.Printf("relayd start to listening, queue recovered: %.2f s (the first start after a boot, sums checked: %.2f s)\n", startup.Seconds(), afterBoot.Seconds())
	for _, args := range [][]string{{"list"}, {"list", "--json"}} {
		t0 := time.Now()
		cmd := exec.Command(b.bin, append([]string{"queue", "-c", b.cfgFile}, args...)...)
		cmd.Stdout = io.Discard
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("relayd queue %v: %w", args, err)
		}
		fmt.Printf("relayd queue %s: %.2f s\n", strings.Join(args, " "), time.Since(t0).Seconds())
	}
	return nil
}
