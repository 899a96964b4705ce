package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"
	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"

	"github.com/relayd/relayd/internal/realserver"
)

// The soak (docs/testing.md, "Soak"): a real relayd between real clients
// and a real Dovecot and Postfix on loopback, for RELAYD_SOAK (a duration,
// at most 30m; make soak) or 60 seconds (every go test run, so that the
// driver does not rot). Under a steady load of IMAP sessions (logins,
// failed logins, SELECT, FETCH, IDLE) and SMTP submissions, faults come
// one at a time: grant revocations and reauthorizations, Dovecot and
// Postfix restarts, reloads, and in the first third SIGKILLs of relayd and
// restarts. The last two thirds run one relayd process, whose goroutines
// (go_goroutines on the status socket's /metrics), descriptors
// (/proc/PID/fd) and RSS are sampled. It passes when every acknowledged
// message reached the final destination (a duplicate is allowed per
// delivery in flight at a kill or a Postfix restart), and the goroutines
// and descriptors of the idle daemon after the run are no more than before
// it. The figures go to RELAYD_SOAK_OUT (make soak: bench/results/soak.txt)
// and the test log.
func TestSoak(t *testing.T) {
	dur, long := 60*time.Second, false
	if s := os.Getenv("RELAYD_SOAK"); s != "" {
		d, err := time.ParseDuration(s)
		if err != nil || d <= 0 || d > 30*time.Minute {
			t.Fatalf("RELAYD_SOAK=%q: want a duration of at most 30m", s)
		}
		dur, long = d, true
	}
	if long {
		// The race detector's shadow memory would hide the daemon's
		// own RSS: the long soak runs a plain build.
		bin := filepath.Join(t.TempDir(), "relayd")
		if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
			t.Fatalf("building relayd: %v\n%s", err, out)
		}
		race := relaydBin
		relaydBin = bin
		t.Cleanup(func() { relaydBin = race })
	}
	s := newSoak(t, dur, long)
	s.run()
}

// soak is one soak run: the servers, the daemon, the load and the figures.
type soak struct {
	t         *testing.T
	e         *env
	dove      *realserver.Dovecot
	pf        *realserver.Postfix
	smtpAddr  string
	dur       time.Duration
	long      bool
	rng       *rand.Rand
	rngMu     sync.Mutex
	sampleGap time.Duration

	mu     sync.Mutex
	d      *daemonProc // the running relayd; nil while it is down
	up     chan struct{}
	acked  map[string]bool
	faults map[string]int

	msgSeq                                          atomic.Int64
	imapOK, imapFailed, wrongRefused, wrongAccepted atomic.Int64
	fetches, idles, smtpRefused                     atomic.Int64
}

// maxInFlight is the account's smtp_connections: at most that many
// deliveries are in flight when relayd is killed or Postfix stops.
const maxInFlight = 3

func newSoak(t *testing.T, dur time.Duration, long bool) *soak {
	e := newEnv(t)
	dove := realserver.StartDovecot(t, e.idp, realserver.DovecotOptions{MaxSessions: 200})
	pf := realserver.StartPostfix(t, dove)
	for i := range 20 {
		msg := fmt.Sprintf("From: someone@example.net\r\nTo: %s\r\nSubject: soak fixture %d\r\nMessage-ID: <fixture-%d@example.net>\r\n\r\n%s\r\n", mbox, i, i, strings.Repeat("fixture line\r\n", 50))
		if err := dove.Deliver(mbox, []byte(msg)); err != nil {
			t.Fatal(err)
		}
	}
	smtpAddr := e.writeSMTPConfig(pf.SubmissionAddr, "200ms", "2s")
	a := &e.conf.Accounts[0]
	a.IMAPServer, a.Direction, a.SMTPConnections = dove.IMAPAddr, "both", maxInFlight
	// Failed logins are part of the load; the lockout would only turn
	// them into refusals of the good password after a restart.
	e.conf.Login = []string{"max_failures = 1000000"}
	e.writeConfig()
	if out, code := e.run("authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile()); code != 0 {
		t.Fatalf("authorize: %s", out)
	}
	seed := uint64(time.Now().UnixNano())
	if v := os.Getenv("RELAYD_SOAK_SEED"); v != "" {
		seed, _ = strconv.ParseUint(v, 10, 64)
	}
	t.Logf("soak: %s, seed %d (RELAYD_SOAK_SEED=%d to replay the fault schedule)", dur, seed, seed)
	gap := 2 * time.Second
	if long {
		gap = 10 * time.Second
	}
	return &soak{t: t, e: e, dove: dove, pf: pf, smtpAddr: smtpAddr, dur: dur, long: long,
		rng: rand.New(rand.NewPCG(seed, seed)), sampleGap: gap, up: make(chan struct{}),
		acked: map[string]bool{}, faults: map[string]int{}}
}

func (s *soak) intn(n int) int {
	s.rngMu.Lock()
	defer s.rngMu.Unlock()
	return s.rng.IntN(n)
}

// start starts relayd and lets the load through.
func (s *soak) start() {
	d := s.e.serve()
	s.mu.Lock()
	s.d = d
	close(s.up)
	s.mu.Unlock()
}

// kill kills relayd with SIGKILL; the load waits for the next start.
func (s *soak) kill() {
	s.mu.Lock()
	d := s.d
	s.d, s.up = nil, make(chan struct{})
	s.mu.Unlock()
	d.cmd.Process.Signal(syscall.SIGKILL)
	<-d.exited
}

// waitUp returns once relayd runs, or false when ctx ends first.
func (s *soak) waitUp(ctx context.Context) bool {
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	select {
	case <-up:
		return true
	case <-ctx.Done():
		return false
	}
}

func (s *soak) fault(name string) {
	s.mu.Lock()
	s.faults[name]++
	s.mu.Unlock()
}

// pause waits d or until ctx ends: the load's own pace, not a
// synchronisation.
func pause(ctx context.Context, d time.Duration) bool {
	select {
	case <-time.After(d):
		return true
	case <-ctx.Done():
		return false
	}
}

// imapLoad runs IMAP sessions until ctx ends: a wrong password now and
// then, then a login, SELECT, FETCH of a few messages, an IDLE, LOGOUT.
func (s *soak) imapLoad(ctx context.Context) {
	for ctx.Err() == nil {
		if !s.waitUp(ctx) {
			return
		}
		if s.intn(4) == 0 {
			if c, err := s.e.login(wrongPassword); err == nil {
				s.wrongAccepted.Add(1)
				c.Close()
			} else {
				s.wrongRefused.Add(1)
			}
		}
		if err := s.imapSession(ctx); err != nil {
			s.imapFailed.Add(1)
			pause(ctx, 200*time.Millisecond)
			continue
		}
		s.imapOK.Add(1)
	}
}

func (s *soak) imapSession(ctx context.Context) error {
	c, err := s.e.login(localPassword)
	if err != nil {
		return err
	}
	defer c.Close()
	sel, err := c.Select("INBOX", nil).Wait()
	if err != nil {
		return err
	}
	if sel.NumMessages > 0 {
		n := uint32(1 + s.intn(int(sel.NumMessages)))
		var set imap.SeqSet
		set.AddRange(n, min(n+4, sel.NumMessages))
		msgs, err := c.Fetch(set, &imap.FetchOptions{Envelope: true, BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
		if err != nil {
			return err
		}
		if len(msgs) == 0 {
			return fmt.Errorf("FETCH %v returned nothing", set)
		}
		s.fetches.Add(1)
	}
	idle, err := c.Idle()
	if err != nil {
		return err
	}
	pause(ctx, time.Duration(500+s.intn(1500))*time.Millisecond)
	if err := idle.Close(); err != nil {
		return err
	}
	if err := idle.Wait(); err != nil {
		return err
	}
	s.idles.Add(1)
	return c.Logout().Wait()
}

// smtpLoad submits messages until ctx ends, recording each one relayd
// acknowledged with 250.
func (s *soak) smtpLoad(ctx context.Context, worker int) {
	for ctx.Err() == nil {
		if !s.waitUp(ctx) {
			return
		}
		if err := s.submitSome(ctx, worker); err != nil {
			s.smtpRefused.Add(1)
			pause(ctx, 200*time.Millisecond)
		}
	}
}

func (s *soak) submitSome(ctx context.Context, worker int) error {
	c, err := smtp.Dial(s.smtpAddr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Auth(sasl.NewPlainClient("", "helpdesk", localPassword)); err != nil {
		return err
	}
	for i := 0; i < 20 && ctx.Err() == nil; i++ {
		n := s.msgSeq.Add(1)
		id := fmt.Sprintf("<soak-%d-%d@test>", worker, n)
		msg := fmt.Sprintf("From: %s\r\nTo: r%d@example.net\r\nSubject: soak %d\r\nMessage-ID: %s\r\n\r\n%s\r\n",
			mbox, n%5, n, id, strings.Repeat("soak body line\r\n", 20+s.intn(200)))
		if err := c.SendMail(mbox, []string{fmt.Sprintf("r%d@example.net", n%5)}, strings.NewReader(msg)); err != nil {
			return err
		}
		s.mu.Lock()
		s.acked[id] = true
		s.mu.Unlock()
		if !pause(ctx, time.Duration(20+s.intn(100))*time.Millisecond) {
			break
		}
	}
	return c.Quit()
}

// reauthorize hands relayd a fresh grant (or stores it, while relayd is
// down).
func (s *soak) reauthorize() {
	if out, code := s.e.run("authorize", "-c", s.e.cfg, "support", "--refresh-token-file", s.e.rtFile()); code != 0 {
		s.t.Errorf("authorize: %s", out)
	}
}

// chaos injects one fault at a time until ctx ends, each kind in turn in
// an order shuffled for every round, so that a short run has each one;
// kills says whether SIGKILLs are among them.
func (s *soak) chaos(ctx context.Context, every time.Duration, kills bool) {
	var order []int
	first := true
	for pause(ctx, every) {
		if len(order) == 0 {
			n := 5
			if kills {
				n = 6
			}
			s.rngMu.Lock()
			order = s.rng.Perm(n)
			s.rngMu.Unlock()
			if first && kills {
				// The smoke run's first third is short: the kill
				// comes first.
				i := slices.Index(order, 5)
				order[0], order[i] = order[i], order[0]
			}
			first = false
		}
		kind := order[0]
		order = order[1:]
		switch kind {
		case 0:
			s.fault("grant revoked, then reauthorized")
			s.e.idp.Revoke(mbox)
			if !pause(ctx, every/3) {
				s.reauthorize()
				return
			}
			s.reauthorize()
		case 1:
			s.fault("Dovecot restarted")
			if err := s.dove.Restart(); err != nil {
				s.t.Errorf("restarting Dovecot: %v", err)
				return
			}
		case 2:
			s.fault("Postfix restarted")
			if err := s.pf.Restart(); err != nil {
				s.t.Errorf("restarting Postfix: %v", err)
				return
			}
		case 3:
			s.fault("reload (SIGHUP, retry_max changed)")
			if s.e.conf.RetryMax == "2s" {
				s.e.conf.RetryMax = "3s"
			} else {
				s.e.conf.RetryMax = "2s"
			}
			s.e.writeConfig()
			s.mu.Lock()
			s.d.cmd.Process.Signal(syscall.SIGHUP)
			s.mu.Unlock()
		case 4:
			s.fault("only the access tokens revoked")
			s.e.idp.RevokeAccessTokens(mbox)
		case 5:
			s.fault("relayd SIGKILLed and restarted")
			s.kill()
			s.start()
		}
	}
}

// sample is one look at the daemon.
type sample struct {
	at                time.Duration // since the measured phase began
	goroutines, fds   int
	rssKiB            int
	sessionsUnderLoad bool
}

// look reads the daemon's goroutines (go_goroutines), descriptors and RSS.
func (s *soak) look() (sample, error) {
	s.mu.Lock()
	pid := s.d.cmd.Process.Pid
	s.mu.Unlock()
	var sm sample
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", s.e.socket)
	}}, Timeout: 10 * time.Second}
	defer hc.CloseIdleConnections()
	resp, err := hc.Get("http://relayd/metrics")
	if err != nil {
		return sm, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			sm.goroutines = int(f)
		}
	}
	if sm.goroutines == 0 {
		return sm, fmt.Errorf("no go_goroutines in /metrics")
	}
	des, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return sm, err
	}
	sm.fds = len(des)
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return sm, err
	}
	for _, l := range strings.Split(string(st), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			sm.rssKiB, _ = strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		}
	}
	return sm, nil
}

// idle waits until the daemon is idle (no load; its goroutine count the
// same in three looks in a row) and returns that look.
func (s *soak) idle() sample {
	var last []int
	for i := 0; ; i++ {
		sm, err := s.look()
		if err != nil {
			s.t.Fatalf("sampling relayd: %v", err)
		}
		last = append(last, sm.goroutines)
		if n := len(last); n >= 3 && last[n-1] == last[n-2] && last[n-2] == last[n-3] {
			return sm
		}
		if i == 60 {
			s.t.Logf("relayd's goroutines did not settle: %v", last)
			return sm
		}
		time.Sleep(500 * time.Millisecond) // polling a count: nothing signals "settled"
	}
}

// load runs the IMAP and SMTP load until ctx ends and waits for it.
func (s *soak) load(ctx context.Context, imapWorkers, smtpWorkers int) *sync.WaitGroup {
	var wg sync.WaitGroup
	for range imapWorkers {
		wg.Go(func() { s.imapLoad(ctx) })
	}
	for i := range smtpWorkers {
		wg.Go(func() { s.smtpLoad(ctx, i) })
	}
	return &wg
}

func (s *soak) run() {
	t := s.t
	began := time.Now()
	s.start()
	imapW, smtpW := 2, 2
	faultEvery := 4 * time.Second
	if s.long {
		imapW, smtpW, faultEvery = 4, 3, 20*time.Second
	}

	// Phase 1, the first third: faults with SIGKILLs.
	killPhase := s.dur / 3
	ctx, cancel := context.WithTimeout(context.Background(), killPhase)
	wg := s.load(ctx, imapW, smtpW)
	s.chaos(ctx, faultEvery, true)
	wg.Wait()
	cancel()
	s.reauthorize()

	// Phase 2: one relayd process, restarted once so that it has seen
	// nothing yet, warmed up with a short load, then sampled.
	s.kill()
	s.start()
	warm, cancelWarm := context.WithTimeout(context.Background(), min(10*time.Second, s.dur/10))
	s.load(warm, imapW, smtpW).Wait()
	cancelWarm()
	before := s.idle()
	measured := s.dur - time.Since(began)
	ctx, cancel = context.WithTimeout(context.Background(), max(measured, 10*time.Second))
	defer cancel()
	phase2 := time.Now()
	var samples []sample
	var sampWG sync.WaitGroup
	sampWG.Go(func() {
		for pause(ctx, s.sampleGap) {
			sm, err := s.look()
			if err != nil {
				continue // a moment of overload: the next look
			}
			sm.at, sm.sessionsUnderLoad = time.Since(phase2), true
			samples = append(samples, sm)
		}
	})
	wg = s.load(ctx, imapW, smtpW)
	s.chaos(ctx, faultEvery, false)
	wg.Wait()
	sampWG.Wait()
	cancel()

	// The end: a valid grant, every acknowledged message delivered.
	s.reauthorize()
	after := s.idle()
	s.mu.Lock()
	acked := maps(s.acked)
	s.mu.Unlock()
	var got map[string]int
	deadline := time.Now().Add(3 * time.Minute)
	for {
		got = map[string]int{}
		for _, m := range messageIDRe.FindAllSubmatch(s.pf.Sunk(), -1) {
			got[string(m[1])]++
		}
		missing := 0
		for _, id := range acked {
			if got[id] == 0 {
				missing++
			}
		}
		if missing == 0 {
			break
		}
		if time.Now().After(deadline) {
			s.mu.Lock()
			d := s.d
			s.mu.Unlock()
			st, _ := s.e.run("queue", "-c", s.e.cfg, "list")
			t.Fatalf("%d of %d acknowledged messages never reached the sink\nqueue:\n%s\nrelayd log (end):\n%s", missing, len(acked), st, tail(d.stderr.String(), 4000))
		}
		time.Sleep(time.Second) // polling: the sink's dump is a file that signals nothing
	}
	s.report(time.Since(began), acked, got, before, after, samples)
}

func maps(m map[string]bool) []string {
	var l []string
	for k := range m {
		l = append(l, k)
	}
	slices.Sort(l)
	return l
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// slope fits y = a + b·x by least squares and returns b.
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if n < 2 {
		return 0
	}
	var sx, sy, sxx, sxy float64
	for i := range xs {
		sx, sy, sxx, sxy = sx+xs[i], sy+ys[i], sxx+xs[i]*xs[i], sxy+xs[i]*ys[i]
	}
	den := n*sxx - sx*sx
	if den == 0 {
		return 0
	}
	return (n*sxy - sx*sy) / den
}

func (s *soak) report(took time.Duration, acked []string, got map[string]int, before, after sample, samples []sample) {
	t := s.t
	ackedSet := map[string]bool{}
	for _, id := range acked {
		ackedSet[id] = true
	}
	dups, unacked := 0, 0
	for id, n := range got {
		if !strings.HasPrefix(id, "<soak-") {
			continue
		}
		dups += n - 1
		if !ackedSet[id] {
			unacked++
		}
	}
	s.mu.Lock()
	kills := s.faults["relayd SIGKILLed and restarted"] + 1 // and the one before phase 2
	pfRestarts := s.faults["Postfix restarted"]
	var faults []string
	for k, v := range s.faults {
		faults = append(faults, fmt.Sprintf("  %-40s %d", k, v))
	}
	s.mu.Unlock()
	slices.Sort(faults)
	// RSS after warm-up: the samples of the measured phase past its
	// first fifth.
	var xs, rss, gor, fds []float64
	for _, sm := range samples {
		if len(samples) >= 5 && sm.at < samples[len(samples)-1].at/5 {
			continue
		}
		xs = append(xs, sm.at.Minutes())
		rss, gor, fds = append(rss, float64(sm.rssKiB)), append(gor, float64(sm.goroutines)), append(fds, float64(sm.fds))
	}
	meanRSS := 0.0
	for _, v := range rss {
		meanRSS += v
	}
	if len(rss) > 0 {
		meanRSS /= float64(len(rss))
	}
	rssSlope := slope(xs, rss)
	measuredMin := 0.0
	if len(xs) > 1 {
		measuredMin = xs[len(xs)-1] - xs[0]
	}
	rssGrowth := 0.0
	if meanRSS > 0 {
		rssGrowth = 100 * rssSlope * measuredMin / meanRSS
	}
	maxOf := func(v []float64) float64 {
		m := 0.0
		for _, x := range v {
			m = math.Max(m, x)
		}
		return m
	}
	mode := "smoke (go test, 60 s)"
	if s.long {
		mode = "make soak"
	}
	cpu := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				cpu = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "relayd soak, %s: %s run (%s asked), %s\n", mode, took.Round(time.Second), s.dur, time.Now().UTC().Format("2006-01-02 15:04 UTC"))
	fmt.Fprintf(&b, "machine: %d CPUs (%s), %s/%s; loopback; real Dovecot and Postfix (smtp-sink as the destination)\n", runtime.NumCPU(), cpu, runtime.GOOS, runtime.GOARCH)
	fmt.Fprintf(&b, "load: %d IMAP workers (login, a wrong password 1 time in 4, SELECT, FETCH, IDLE, LOGOUT), %d SMTP submitters\n\n", s.imapW(), s.smtpW())
	fmt.Fprintf(&b, "messages acknowledged (250):       %d\n", len(acked))
	fmt.Fprintf(&b, "  delivered to the sink:           %d (all)\n", len(acked))
	fmt.Fprintf(&b, "  duplicates:                      %d (allowed: %d, one per delivery in flight at %d kills and %d Postfix restarts)\n", dups, maxInFlight*(kills+pfRestarts), kills, pfRestarts)
	fmt.Fprintf(&b, "  delivered, never acknowledged:   %d (cut off by a kill before the 250 reached the client)\n", unacked)
	fmt.Fprintf(&b, "SMTP connections refused or cut:   %d\n", s.smtpRefused.Load())
	fmt.Fprintf(&b, "IMAP sessions completed:           %d (FETCH %d, IDLE %d); failed or cut: %d\n", s.imapOK.Load(), s.fetches.Load(), s.idles.Load(), s.imapFailed.Load())
	fmt.Fprintf(&b, "wrong passwords refused:           %d (accepted: %d)\n", s.wrongRefused.Load(), s.wrongAccepted.Load())
	fmt.Fprintf(&b, "faults:\n%s\n\n", strings.Join(faults, "\n"))
	fmt.Fprintf(&b, "one relayd process, sampled every %s over %.1f min after warm-up (%d samples):\n", s.sampleGap, measuredMin, len(xs))
	fmt.Fprintf(&b, "  goroutines idle before / after:  %d / %d (under load: max %.0f, slope %+.2f/min)\n", before.goroutines, after.goroutines, maxOf(gor), slope(xs, gor))
	fmt.Fprintf(&b, "  descriptors idle before / after: %d / %d (under load: max %.0f, slope %+.2f/min)\n", before.fds, after.fds, maxOf(fds), slope(xs, fds))
	fmt.Fprintf(&b, "  RSS idle before / after:         %d / %d KiB (under load: mean %.0f KiB, max %.0f KiB)\n", before.rssKiB, after.rssKiB, meanRSS, maxOf(rss))
	fmt.Fprintf(&b, "  RSS slope after warm-up:         %+.1f KiB/min (%+.1f%% of the mean over the window)\n", rssSlope, rssGrowth)
	t.Log("\n" + b.String())
	if out := os.Getenv("RELAYD_SOAK_OUT"); out != "" {
		os.MkdirAll(filepath.Dir(out), 0o755)
		if err := os.WriteFile(out, []byte(b.String()), 0o644); err != nil {
			t.Error(err)
		}
	}
	if dups > maxInFlight*(kills+pfRestarts) {
		t.Errorf("%d duplicates: more than one per delivery in flight", dups)
	}
	if len(acked) == 0 || s.imapOK.Load() == 0 || s.idles.Load() == 0 {
		t.Errorf("the load did not run: %d messages acknowledged, %d IMAP sessions, %d IDLEs", len(acked), s.imapOK.Load(), s.idles.Load())
	}
	// Idle after the run as before it: a leak leaves goroutines (each
	// leaked session holds a few) or descriptors behind.
	if after.goroutines > before.goroutines+5 {
		t.Errorf("goroutines grew from %d to %d over the soak", before.goroutines, after.goroutines)
	}
	if after.fds > before.fds+3 {
		t.Errorf("descriptors grew from %d to %d over the soak", before.fds, after.fds)
	}
	if s.long && measuredMin >= 10 && rssGrowth > 25 {
		t.Errorf("RSS grew by %.1f%% over %.1f minutes after warm-up", rssGrowth, measuredMin)
	}
}

func (s *soak) imapW() int {
	if s.long {
		return 4
	}
	return 2
}

func (s *soak) smtpW() int {
	if s.long {
		return 3
	}
	return 2
}
