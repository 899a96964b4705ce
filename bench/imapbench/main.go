// Command imapbench measures relayd's IMAP path side by side with a direct
// connection to the same real Dovecot, in the same run. relayd, Dovecot and
// the client (this program) each run in their own process; this program also
// hosts the fake identity provider whose introspection endpoint Dovecot
// uses. The defaults are the targets of the foundation issue:
//
//   - bulk FETCH of a 100 MB mailbox, plaintext and TLS upstream
//     (targets: 0.95 and 0.90 of direct throughput);
//   - connect + LOGIN + SELECT + LOGOUT with a TLS upstream, token and local
//     credential cache warm, plus the cold bcrypt cost: at each -rtt
//     (default 30 ms, through a delaying relay, and 0), direct, relayd
//     with its warm connections off (cold) and on (warm), interleaved
//     (targets at 30 ms: warm p50 at most 0.6 of direct and of cold; at
//     0: warm not slower than cold);
//   - relayd's RSS per idle (IDLE) session, holding as many sessions as
//     the open-file limit allows (target under 40 KB with a plaintext
//     upstream; TLS reported), and its open files per session.
//
// By default Dovecot runs on its own CPUs and relayd and the client share
// the others, as when the provider is a remote machine (-placement).
//
// Run: go run ./bench/imapbench (as root, with Debian's dovecot-imapd).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/bench/internal/machine"
	"github.com/relayd/relayd/bench/internal/netdelay"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
)

const (
	mailbox  = "support@example.com"
	password = "bench-local-pw"
	clientID = "bench"
)

var (
	mailboxMB   = flag.Int("mailbox-mb", 100, "size of the mailbox fetched in bulk, in MB")
	msgKB       = flag.Int("message-kb", 1024, "size of each message, in KB")
	rounds      = flag.Int("rounds", 7, "bulk FETCH rounds per path")
	repeat      = flag.Int("repeat", 3, "whole-mailbox FETCHes per round, on one connection")
	logins      = flag.Int("logins", 300, "login round trips per path")
	idle        = flag.Int("idle", 0, "idle sessions to hold (default: as many as relayd's open-file limit allows, two descriptors each)")
	relaydPath  = flag.String("relayd", "", "relayd binary (default: build ./cmd/relayd)")
	settle      = flag.Duration("settle", time.Minute, "idle benchmark: how long after the last session reached IDLE relayd's memory is measured")
	idleOpen    = flag.String("idle-open", "gradual,burst", "idle benchmark: how the sessions are opened, one after the other (gradual) or all at once (burst); run one per invocation for a fresh relayd each")
	idleTLSOnly = flag.Bool("idle-tls-only", false, "idle benchmark: the TLS upstream only")
	idleSmaps   = flag.String("idle-smaps", "", "idle benchmark: copy relayd's /proc/PID/smaps here when its memory is measured")
	only        = flag.String("only", "fetch,login,idle", "comma-separated benchmarks to run")
	rtts        = flag.String("rtt", "30ms,0s", "round-trip times between the clients (direct, and relayd) and Dovecot for the login benchmark, emulated by a delaying relay on loopback")
	placement   = flag.String("placement", "split", "split: Dovecot on its own CPUs, relayd and the client on the others, as with a remote provider; shared: wherever the scheduler puts them")
)

func enabled(name string) bool { return machine.Selected(*only, name) }

func main() {
	flag.Parse()
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Fatal("imapbench: ", err)
	}
}

type setup struct {
	idp     *testkit.IdP
	dove    *realserver.Dovecot
	relayd  *exec.Cmd
	pid     int
	relayAt string
	// metricsAt serves relayd's metrics (Go heap and goroutines for the
	// idle benchmark).
	metricsAt string
	roots     *x509.CertPool
	tmp       string
	logFile   *os.File
	place     *machine.Placement // nil with -placement shared
	// rtts are the login benchmark's round-trip times; delayed[i] is
	// Dovecot's IMAPS address as seen RTT rtts[i] away (Dovecot's own for
	// 0), relays the delaying relays.
	rtts    []time.Duration
	delayed []string
	relays  []*netdelay.Relay
	// sessions lets the direct client of the login benchmark resume TLS
	// sessions.
	sessions tls.ClientSessionCache
}

func run() error {
	if *idle == 0 {
		*idle = idleSessions()
	}
	s, err := start()
	if err != nil {
		return err
	}
	defer s.stop()
	report(s)

	if enabled("fetch") {
		fmt.Println("\n## Bulk FETCH of the whole mailbox (BODY.PEEK[] of every message)")
		for _, tlsUp := range []bool{false, true} {
			if err := benchFetch(s, tlsUp); err != nil {
				return err
			}
		}
	}
	if enabled("login") {
		for i, rtt := range s.rtts {
			fmt.Printf("\n## connect + LOGIN + SELECT + LOGOUT, TLS upstream, caches warm, %v RTT to Dovecot\n", rtt)
			if err := benchLogin(s, i); err != nil {
				return err
			}
		}
	}
	if enabled("idle") {
		fmt.Println("\n## Idle sessions (IDLE), relayd's resident memory per session")
		for _, tlsUp := range []bool{false, true} {
			for _, burst := range []bool{false, true} {
				if !tlsUp && *idleTLSOnly || !machine.Selected(*idleOpen, map[bool]string{false: "gradual", true: "burst"}[burst]) {
					continue
				}
				if err := benchIdle(s, tlsUp, burst); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func start() (*setup, error) {
	s := &setup{}
	var err error
	if s.tmp, err = os.MkdirTemp("", "imapbench-"); err != nil {
		return nil, err
	}
	if s.idp, err = testkit.NewIdP(); err != nil {
		return nil, err
	}
	s.idp.AddClient(clientID, "")
	s.idp.AccessTTL = 24 * time.Hour
	runDovecot := func() (err error) {
		s.dove, err = realserver.RunDovecot(s.idp, realserver.DovecotOptions{MaxSessions: *idle * 2})
		return err
	}
	switch *placement {
	case "split":
		if s.place, err = machine.Split(); err != nil {
			return nil, err
		}
		if err := s.place.PinSelf(); err != nil {
			return nil, err
		}
		err = s.place.StartUpstream(runDovecot)
	case "shared":
		err = runDovecot()
	default:
		return nil, fmt.Errorf("-placement %q: want split or shared", *placement)
	}
	if err != nil {
		return nil, err
	}
	count := *mailboxMB * 1024 / *msgKB
	if err := s.dove.FillMaildir(mailbox, count, *msgKB*1024); err != nil {
		return nil, err
	}
	s.roots = x509.NewCertPool()
	s.roots.AppendCertsFromPEM(s.dove.CertPEM)
	s.sessions = tls.NewLRUClientSessionCache(16)
	for _, f := range strings.Split(*rtts, ",") {
		rtt, err := time.ParseDuration(strings.TrimSpace(f))
		if err != nil || rtt < 0 {
			return nil, fmt.Errorf("-rtt %q: want durations like 30ms", f)
		}
		addr := s.dove.IMAPSAddr
		if rtt > 0 {
			r, err := netdelay.Start(addr, rtt)
			if err != nil {
				return nil, err
			}
			s.relays = append(s.relays, r)
			addr = r.Addr()
		}
		s.rtts, s.delayed = append(s.rtts, rtt), append(s.delayed, addr)
	}

	bin, err := machine.Relayd(*relaydPath, s.tmp)
	if err != nil {
		return nil, err
	}
	if s.relayAt, err = realserver.FreeAddr(); err != nil {
		return nil, err
	}
	if s.metricsAt, err = realserver.FreeAddr(); err != nil {
		return nil, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	ca := filepath.Join(s.tmp, "ca.pem")
	os.WriteFile(ca, s.dove.CertPEM, 0o600)
	acct := func(name, server, sec string, warm int) testkit.Account {
		return testkit.Account{
			Name: name, Provider: "custom", Email: mailbox, ClientID: clientID, TokenURL: s.idp.TokenURL(),
			IMAPServer: server, Security: sec, CAFile: ca, Direction: "incoming",
			LocalUser: name, LocalPasswordHash: string(hash), WarmConnections: &warm,
		}
	}
	// The FETCH and idle benchmarks' accounts keep no warm connection, so
	// that their figures stay comparable with earlier runs; the login
	// benchmark has a cold and a warm account per RTT.
	accounts := []testkit.Account{acct("plain", s.dove.IMAPAddr, "none", 0), acct("tls", s.dove.IMAPSAddr, "tls", 0)}
	for i := range s.rtts {
		accounts = append(accounts, acct(loginUser("cold", i), s.delayed[i], "tls", 0), acct(loginUser("warm", i), s.delayed[i], "tls", 1))
	}
	cfgText := testkit.Config{
		StateDir: filepath.Join(s.tmp, "state"), StatusSocket: filepath.Join(s.tmp, "status.sock"), LogLevel: "warn",
		IMAPListen: []string{s.relayAt},
		// Room for every idle session, the warm one and the pools.
		IMAP:     []string{fmt.Sprintf("max_sessions = %d", *idle+100), fmt.Sprintf("max_sessions_per_address = %d", *idle+100)},
		Metrics:  []string{fmt.Sprintf("listen = %q", s.metricsAt)},
		Accounts: accounts,
	}.TOML()
	cfgFile := filepath.Join(s.tmp, "relayd.toml")
	os.WriteFile(cfgFile, []byte(cfgText), 0o600)
	cfg, err := config.Parse(cfgText)
	if err != nil {
		return nil, err
	}
	store := &auth.Store{Dir: cfg.StateDir}
	for _, a := range cfg.Accounts {
		g, err := auth.ImportRefreshToken(context.Background(), a, nil, s.idp.IssueRefreshToken(clientID, mailbox))
		if err != nil {
			return nil, err
		}
		store.Save(a.Name, g)
	}
	if s.logFile, err = os.Create(filepath.Join(s.tmp, "relayd.log")); err != nil {
		return nil, err
	}
	s.relayd = exec.Command(bin, "serve", "-c", cfgFile, "-grace", "1s")
	s.relayd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone with an interrupted run
	s.relayd.Stderr = s.logFile
	if err := s.relayd.Start(); err != nil {
		return nil, err
	}
	s.pid = s.relayd.Process.Pid
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", s.relayAt); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			return nil, errors.New("relayd did not start listening")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return s, nil
}

func (s *setup) stop() {
	if s.relayd != nil {
		s.relayd.Process.Kill()
		s.relayd.Wait()
	}
	for _, r := range s.relays {
		r.Close()
	}
	if s.dove != nil {
		s.dove.Stop()
	}
	if s.idp != nil {
		s.idp.Close()
	}
	os.RemoveAll(s.tmp)
}

func report(s *setup) {
	dv, _ := exec.Command("dovecot", "--version").Output()
	fmt.Printf("# imapbench %s\n\n", time.Now().UTC().Format(time.RFC3339))
	fmt.Printf("machine: %s\ndovecot %s", machine.Describe(), dv)
	where := "shared: the scheduler places Dovecot, relayd and this client"
	if s.place != nil {
		where = "split: " + s.place.String()
	}
	fmt.Printf("CPU placement: %s\n", where)
	fmt.Printf("mailbox: %d messages of %d KB; relayd, Dovecot and this client in separate processes on loopback\n",
		*mailboxMB*1024 / *msgKB, *msgKB)
}

// conn is a minimal raw IMAP client.
type conn struct {
	c  net.Conn
	br *bufio.Reader
	n  int
}

func dial(addr string, tlsCfg *tls.Config) (*conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsCfg != nil {
		tc := tls.Client(c, tlsCfg)
		if err := tc.Handshake(); err != nil {
			c.Close()
			return nil, err
		}
		c = tc
	}
	cn := &conn{c: c, br: bufio.NewReaderSize(c, 64<<10)}
	if _, err := cn.br.ReadString('\n'); err != nil {
		c.Close()
		return nil, err
	}
	return cn, nil
}

// cmd sends a command and reads its response, skipping literals; it returns
// the number of bytes read.
func (c *conn) cmd(text string) (int64, error) {
	c.n++
	tag := "t" + strconv.Itoa(c.n)
	if _, err := io.WriteString(c.c, tag+" "+text+"\r\n"); err != nil {
		return 0, err
	}
	return c.readUntil(tag)
}

func (c *conn) readUntil(tag string) (int64, error) {
	var total int64
	for {
		line, err := c.br.ReadSlice('\n')
		total += int64(len(line))
		if err != nil {
			return total, err
		}
		if n := len(line); n > 3 && line[n-3] == '}' {
			if i := strings.LastIndexByte(string(line), '{'); i >= 0 {
				size, err := strconv.ParseInt(string(line[i+1:n-3]), 10, 64)
				if err == nil {
					m, err := io.CopyN(io.Discard, c.br, size)
					total += m
					if err != nil {
						return total, err
					}
					continue
				}
			}
		}
		if strings.HasPrefix(string(line), tag+" ") {
			if !strings.HasPrefix(string(line), tag+" OK") {
				return total, fmt.Errorf("%s", strings.TrimSpace(string(line)))
			}
			return total, nil
		}
	}
}

// direct logs in to Dovecot itself with XOAUTH2, as relayd would.
func (s *setup) direct(tlsUp bool) (*conn, error) {
	addr, cfg := s.dove.IMAPAddr, (*tls.Config)(nil)
	if tlsUp {
		addr, cfg = s.dove.IMAPSAddr, &tls.Config{RootCAs: s.roots, ServerName: "127.0.0.1"}
	}
	c, err := dial(addr, cfg)
	if err != nil {
		return nil, err
	}
	_, err = c.cmd("AUTHENTICATE XOAUTH2 " + testkit.EncodeXOAUTH2(mailbox, s.token()))
	return c, err
}

var cachedToken string

func (s *setup) token() string {
	if cachedToken == "" {
		cachedToken = s.idp.IssueAccessToken(mailbox, 24*time.Hour)
	}
	return cachedToken
}

func (s *setup) viaRelayd(tlsUp bool) (*conn, error) {
	c, err := dial(s.relayAt, nil)
	if err != nil {
		return nil, err
	}
	user := "plain"
	if tlsUp {
		user = "tls"
	}
	_, err = c.cmd("LOGIN " + user + " " + password)
	return c, err
}

func upName(tlsUp bool) string {
	if tlsUp {
		return "TLS upstream"
	}
	return "plaintext upstream"
}

func benchFetch(s *setup, tlsUp bool) error {
	var direct, relayed []float64
	var relaydCPU float64
	var relayedBytes int64
	clientCPU := map[bool]float64{}
	clientBytes := map[bool]int64{}
	// How busy each side's CPUs were, per path: [path][upstream, local].
	busy := map[bool]*[2]float64{false: {}, true: {}}
	// Round -2 and -1 warm the page cache and both paths; they are not
	// counted.
	for i := -2; i < *rounds*2; i++ {
		viaRelay := i%2 != 0
		var c *conn
		var err error
		if viaRelay {
			c, err = s.viaRelayd(tlsUp)
		} else {
			c, err = s.direct(tlsUp)
		}
		if err != nil {
			return err
		}
		if _, err := c.cmd("EXAMINE INBOX"); err != nil {
			return err
		}
		t0 := time.Now()
		ticks0 := machine.ReadCPUTicks()
		cpu0 := cpuSeconds(s.pid)
		var self0 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &self0)
		var n int64
		for j := 0; j < *repeat; j++ {
			m, err := c.cmd("FETCH 1:* BODY.PEEK[]")
			if err != nil {
				return err
			}
			n += m
		}
		mbps := float64(n) / 1e6 / time.Since(t0).Seconds()
		var self1 syscall.Rusage
		syscall.Getrusage(syscall.RUSAGE_SELF, &self1)
		if viaRelay && i >= 0 {
			relaydCPU += cpuSeconds(s.pid) - cpu0
			relayedBytes += n
		}
		if i >= 0 && s.place != nil {
			ticks1 := machine.ReadCPUTicks()
			busy[viaRelay][0] += machine.Busy(&s.place.Upstream, ticks0, ticks1) / float64(*rounds)
			busy[viaRelay][1] += machine.Busy(&s.place.Local, ticks0, ticks1) / float64(*rounds)
		}
		if i >= 0 {
			clientCPU[viaRelay] += tv(self1.Utime) + tv(self1.Stime) - tv(self0.Utime) - tv(self0.Stime)
			clientBytes[viaRelay] += n
		}
		c.cmd("LOGOUT")
		c.c.Close()
		if i < 0 {
			continue
		}
		if viaRelay {
			relayed = append(relayed, mbps)
		} else {
			direct = append(direct, mbps)
		}
	}
	d, r := machine.Median(direct), machine.Median(relayed)
	fmt.Printf("%-20s direct %8.1f MB/s   relayd %8.1f MB/s   ratio %.3f   (median of %d; direct %s; relayd %s)\n",
		upName(tlsUp), d, r, r/d, *rounds, machine.All(direct), machine.All(relayed))
	fmt.Printf("%-20s CPU per GB: relayd %.2f s; client %.2f s direct, %.2f s through relayd\n", "",
		relaydCPU/float64(relayedBytes)*1e9, clientCPU[false]/float64(clientBytes[false])*1e9,
		clientCPU[true]/float64(clientBytes[true])*1e9)
	if s.place != nil {
		fmt.Printf("%-20s CPUs busy: upstream's %.0f%% direct, %.0f%% through relayd; relayd's and client's %.0f%% direct, %.0f%% through relayd\n", "",
			busy[false][0]*100, busy[true][0]*100, busy[false][1]*100, busy[true][1]*100)
	}
	return nil
}

// loginUser is the local user (and account) of the login benchmark's
// path ("cold", "warm") at the i-th RTT.
func loginUser(path string, i int) string { return fmt.Sprintf("%s%d", path, i) }

// benchLogin times connect + LOGIN + SELECT + LOGOUT at s.rtts[i]: direct
// to Dovecot (XOAUTH2, a token at hand), through relayd with warm
// connections off, and on; interleaved, so that a noisy moment of the
// machine hits all three alike.
func benchLogin(s *setup, i int) error {
	paths := []string{"direct", "cold", "warm"}
	once := func(path string) (time.Duration, error) {
		t0 := time.Now()
		var c *conn
		var err error
		if path == "direct" {
			// A client that resumes TLS sessions, as relayd does.
			c, err = dial(s.delayed[i], &tls.Config{RootCAs: s.roots, ServerName: "127.0.0.1", ClientSessionCache: s.sessions})
			if err == nil {
				_, err = c.cmd("AUTHENTICATE XOAUTH2 " + testkit.EncodeXOAUTH2(mailbox, s.token()))
			}
		} else if c, err = dial(s.relayAt, nil); err == nil {
			_, err = c.cmd("LOGIN " + loginUser(path, i) + " " + password)
		}
		if err != nil {
			return 0, fmt.Errorf("%s login: %w", path, err)
		}
		defer c.c.Close()
		if _, err := c.cmd("SELECT INBOX"); err != nil {
			return 0, err
		}
		if _, err := c.cmd("LOGOUT"); err != nil {
			return 0, err
		}
		return time.Since(t0), nil
	}
	// Warm the tokens, the local credential cache and TLS sessions; give
	// the warm account's pool its connection.
	for _, p := range paths {
		if _, err := once(p); err != nil {
			return err
		}
	}
	ms := map[string][]float64{}
	for j := 0; j < *logins; j++ {
		for _, p := range paths {
			d, err := once(p)
			if err != nil {
				return err
			}
			ms[p] = append(ms[p], float64(d.Microseconds())/1000)
		}
	}
	p50 := func(p string) float64 { return machine.Median(ms[p]) }
	for _, p := range paths {
		fmt.Printf("%-7s p50 %7.2f ms   p90 %7.2f ms   p99 %7.2f ms\n", p, p50(p), machine.Percentile(ms[p], 0.9), machine.Percentile(ms[p], 0.99))
	}
	fmt.Printf("warm/direct p50 %.3f   warm/cold p50 %.3f   cold/direct p50 %.3f   (%d each, interleaved)\n",
		p50("warm")/p50("direct"), p50("warm")/p50("cold"), p50("cold")/p50("direct"), *logins)
	if i == 0 {
		h, _ := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
		const n = 10
		t0 := time.Now()
		for i := 0; i < n; i++ {
			bcrypt.CompareHashAndPassword(h, []byte(password))
		}
		fmt.Printf("cold login adds one bcrypt check (cost %d): %.1f ms\n", bcrypt.DefaultCost, float64(time.Since(t0).Microseconds())/1000/n)
	}
	return nil
}

// idleStats is what the idle benchmark reads of relayd: its resident
// memory, and from its metrics the Go heap in use, the goroutine stacks,
// the goroutines and the warm pool's ready connections.
type idleStats struct {
	rssKB                 int64
	heapKB, stackKB       float64
	goroutines, warmReady float64
	// The rest of the runtime's memory, for where RSS goes beyond the
	// heap and stacks: span structures, GC metadata, other runtime
	// memory, free heap not yet given back, and OS threads.
	spanKB, gcKB, otherKB, unreleasedKB, threads float64
	heapIdle, heapReleased                       float64
}

func (s *setup) idleStats() (idleStats, error) {
	var st idleStats
	var err error
	if st.rssKB, err = rssKB(s.pid); err != nil {
		return st, err
	}
	resp, err := http.Get("http://" + s.metricsAt + "/metrics")
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 || strings.HasPrefix(f[0], "#") {
			continue
		}
		v, _ := strconv.ParseFloat(f[1], 64)
		switch {
		case f[0] == "go_memstats_heap_inuse_bytes":
			st.heapKB = v / 1024
		case f[0] == "go_memstats_stack_inuse_bytes":
			st.stackKB = v / 1024
		case f[0] == "go_goroutines":
			st.goroutines = v
		case f[0] == "go_memstats_mspan_inuse_bytes":
			st.spanKB = v / 1024
		case f[0] == "go_memstats_gc_sys_bytes":
			st.gcKB = v / 1024
		case f[0] == "go_memstats_other_sys_bytes":
			st.otherKB = v / 1024
		case f[0] == "go_memstats_heap_idle_bytes":
			st.heapIdle = v / 1024
		case f[0] == "go_memstats_heap_released_bytes":
			st.heapReleased = v / 1024
		case f[0] == "go_threads":
			st.threads = v
		case strings.HasPrefix(f[0], "relayd_warm_connections{") && strings.Contains(f[0], `state="ready"`):
			st.warmReady += v
		}
	}
	st.unreleasedKB = st.heapIdle - st.heapReleased
	return st, sc.Err()
}

// benchIdle opens -idle sessions through relayd, each logged in, SELECTed
// and in IDLE, one after the other or (burst) all at once, waits -settle
// after the last reached IDLE, and reports what relayd holds per session.
func benchIdle(s *setup, tlsUp, burst bool) error {
	// One session first, so that one-time costs (TLS roots, pools, the
	// token) are not counted per session.
	warm, err := s.viaRelayd(tlsUp)
	if err != nil {
		return err
	}
	time.Sleep(*settle / 4) // the first session's garbage goes first
	before, err := s.idleStats()
	if err != nil {
		return err
	}
	fdsBefore, socketsBefore := openFiles(s.pid)
	conns := make([]*conn, *idle)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.c.Close()
			}
		}
		warm.c.Close()
	}()
	open := func(i int) error {
		c, err := s.viaRelayd(tlsUp)
		if err != nil {
			return fmt.Errorf("session %d: %w", i+1, err)
		}
		conns[i] = c
		if _, err := c.cmd("SELECT INBOX"); err != nil {
			return fmt.Errorf("session %d: %w", i+1, err)
		}
		io.WriteString(c.c, "idle IDLE\r\n")
		if l, err := c.br.ReadString('\n'); err != nil || !strings.HasPrefix(l, "+") {
			return fmt.Errorf("session %d: IDLE: %q %v", i+1, l, err)
		}
		return nil
	}
	t0 := time.Now()
	if burst {
		gate := make(chan struct{})
		errs := make(chan error, *idle)
		var wg sync.WaitGroup
		for i := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				errs <- open(i)
			}()
		}
		close(gate)
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				return err
			}
		}
	} else {
		for i := range conns {
			if err := open(i); err != nil {
				return err
			}
		}
	}
	opened := time.Since(t0)
	atIdle, err := s.idleStats()
	if err != nil {
		return err
	}
	time.Sleep(*settle)
	after, err := s.idleStats()
	if err != nil {
		return err
	}
	fdsAfter, _ := openFiles(s.pid)
	if *idleSmaps != "" {
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps", s.pid)); err == nil {
			os.WriteFile(*idleSmaps, b, 0o644)
		}
	}
	// Prove the sessions are alive: end IDLE on a sample.
	for _, c := range []*conn{conns[0], conns[len(conns)/2], conns[len(conns)-1]} {
		io.WriteString(c.c, "DONE\r\n")
		if _, err := c.readUntil("idle"); err != nil {
			return fmt.Errorf("session not alive after the measurement: %w", err)
		}
	}
	n := float64(len(conns))
	how := "one after the other"
	if burst {
		how = "all at once"
	}
	fmt.Printf("%-20s %d sessions %s in %.1f s; %v after the last reached IDLE: relayd VmRSS %d KB -> %d KB, %.1f KB per session (%.1f KB right at IDLE)\n",
		upName(tlsUp), len(conns), how, opened.Seconds(), *settle, before.rssKB, after.rssKB,
		float64(after.rssKB-before.rssKB)/n, float64(atIdle.rssKB-before.rssKB)/n)
	fmt.Printf("%-20s Go heap in use %.0f KB -> %.0f KB, %.1f KB per session; goroutine stacks %.1f KB per session; goroutines %.0f -> %.0f, %.2f per session; open files %d -> %d, %.2f per session; warm pool's own ready connections %.0f (not counted: none for this account)\n",
		"", before.heapKB, after.heapKB, (after.heapKB-before.heapKB)/n, (after.stackKB-before.stackKB)/n,
		before.goroutines, after.goroutines, (after.goroutines-before.goroutines)/n,
		fdsBefore, fdsAfter, float64(fdsAfter-fdsBefore)/n, after.warmReady)
	fmt.Printf("%-20s per session: span structures %.2f KB, GC metadata %.2f KB (address space the runtime mapped, much of it never touched), other runtime (poll descriptors among it) %.2f KB, free heap not given back %.2f KB; OS threads %.0f -> %.0f\n",
		"", (after.spanKB-before.spanKB)/n, (after.gcKB-before.gcKB)/n, (after.otherKB-before.otherKB)/n,
		(after.unreleasedKB-before.unreleasedKB)/n, before.threads, after.threads)
	// Let relayd close these sessions before anything else runs: the
	// next measurement needs the descriptors.
	for i, c := range conns {
		c.c.Close()
		conns[i] = nil
	}
	deadline := time.Now().Add(time.Minute)
	for {
		_, sockets := openFiles(s.pid)
		if sockets <= socketsBefore {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("relayd still has %d sockets open a minute after its sessions ended (%d before)", sockets, socketsBefore)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// idleSessions is how many sessions relayd's open-file limit allows: two
// descriptors each, downstream and upstream, and 100 for everything else.
// relayd, like this program, raises its soft limit to the hard one. The
// machine's memory caps it too: Dovecot runs an imap process of about
// 0.7 MB per session (1 MB is allowed).
func idleSessions() int {
	var rl syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) // already raised by Go's runtime
	n := max(int(min(rl.Cur, 1<<30))-100, 200) / 2
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) >= 2 && f[0] == "MemAvailable:" {
				if kb, err := strconv.Atoi(f[1]); err == nil {
					n = min(n, kb/1024)
				}
			}
		}
	}
	return n
}

// openFiles counts process pid's open file descriptors, and those of
// them that are sockets.
func openFiles(pid int) (all, sockets int) {
	dir := fmt.Sprintf("/proc/%d/fd", pid)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			sockets++
		}
	}
	return len(ents), sockets
}

// cpuSeconds is the user plus system CPU time process pid has used.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses.
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func tv(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }

func rssKB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			return strconv.ParseInt(f[1], 10, 64)
		}
	}
	return 0, errors.New("no VmRSS")
}
