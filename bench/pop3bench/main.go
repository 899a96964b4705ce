// Command pop3bench measures relayd's POP3 path side by side with a direct
// connection to the same real Dovecot, in the same run: RETR of every
// message of a 100 MB mailbox, with a plaintext and a TLS upstream
// (targets of issue 19: 0.95 and 0.90 of direct throughput). relayd,
// Dovecot and the client (this program) each run in their own process;
// this program also hosts the fake identity provider whose introspection
// endpoint Dovecot uses. CPU placement as imapbench's (-placement).
//
// Run: go run ./bench/pop3bench (as root, with Debian's dovecot-pop3d).
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/bench/internal/machine"
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
	mailboxMB  = flag.Int("mailbox-mb", 100, "size of the mailbox, in MB")
	msgKB      = flag.Int("message-kb", 1024, "size of each message, in KB")
	rounds     = flag.Int("rounds", 7, "rounds per path, each RETR of every message")
	relaydPath = flag.String("relayd", "", "relayd binary (default: build ./cmd/relayd)")
	placement  = flag.String("placement", "split", "split: Dovecot on its own CPUs, relayd and the client on the others; shared: wherever the scheduler puts them")
)

func main() {
	flag.Parse()
	log.SetFlags(0)
	if err := run(); err != nil {
		log.Fatal("pop3bench: ", err)
	}
}

type setup struct {
	idp     *testkit.IdP
	dove    *realserver.Dovecot
	relayd  *exec.Cmd
	relayAt string
	roots   *x509.CertPool
	tmp     string
	place   *machine.Placement
	token   string
}

func run() error {
	s, err := start()
	if err != nil {
		return err
	}
	defer s.stop()
	dv, _ := exec.Command("dovecot", "--version").Output()
	fmt.Printf("# pop3bench %s\n\nmachine: %s\ndovecot %s", time.Now().UTC().Format(time.RFC3339), machine.Describe(), dv)
	where := "shared: the scheduler places Dovecot, relayd and this client"
	if s.place != nil {
		where = "split: " + s.place.String()
	}
	fmt.Printf("CPU placement: %s\nmailbox: %d messages of %d KB; relayd, Dovecot and this client in separate processes on loopback\n",
		where, *mailboxMB*1024 / *msgKB, *msgKB)
	fmt.Println("\n## RETR of every message (one at a time, as fetchmail does)")
	for _, tlsUp := range []bool{false, true} {
		if err := benchRetr(s, tlsUp); err != nil {
			return err
		}
	}
	return nil
}

func start() (*setup, error) {
	s := &setup{}
	var err error
	if s.tmp, err = os.MkdirTemp("", "pop3bench-"); err != nil {
		return nil, err
	}
	if s.idp, err = testkit.NewIdP(); err != nil {
		return nil, err
	}
	s.idp.AddClient(clientID, "")
	s.idp.AccessTTL = 24 * time.Hour
	runDovecot := func() (err error) {
		s.dove, err = realserver.RunDovecot(s.idp, realserver.DovecotOptions{})
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
	if err := s.dove.FillMaildir(mailbox, *mailboxMB*1024 / *msgKB, *msgKB*1024); err != nil {
		return nil, err
	}
	s.roots = x509.NewCertPool()
	s.roots.AppendCertsFromPEM(s.dove.CertPEM)
	s.token = s.idp.IssueAccessToken(mailbox, 24*time.Hour)

	bin, err := machine.Relayd(*relaydPath, s.tmp)
	if err != nil {
		return nil, err
	}
	if s.relayAt, err = realserver.FreeAddr(); err != nil {
		return nil, err
	}
	imapAt, err := realserver.FreeAddr()
	if err != nil {
		return nil, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return nil, err
	}
	ca := filepath.Join(s.tmp, "ca.pem")
	os.WriteFile(ca, s.dove.CertPEM, 0o600)
	acct := func(name, server, sec string) testkit.Account {
		return testkit.Account{
			Name: name, Provider: "custom", Email: mailbox, ClientID: clientID, TokenURL: s.idp.TokenURL(),
			IMAPServer: s.dove.IMAPAddr, POP3Server: server, Security: sec, CAFile: ca, Direction: "incoming",
			LocalUser: name, LocalPasswordHash: string(hash),
		}
	}
	cfgText := testkit.Config{
		StateDir: filepath.Join(s.tmp, "state"), StatusSocket: filepath.Join(s.tmp, "status.sock"), LogLevel: "warn",
		IMAPListen: []string{imapAt}, POP3Listen: []string{s.relayAt},
		Accounts: []testkit.Account{acct("plain", s.dove.POP3Addr, "none"), acct("tls", s.dove.POP3SAddr, "tls")},
	}.TOML()
	// The IMAP server of the plaintext account is reached in plaintext
	// too, whatever Security says for POP3.
	cfgText = strings.Replace(cfgText, "imap_security = \"tls\"", "imap_security = \"none\"", -1)
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
	logFile, err := os.Create(filepath.Join(s.tmp, "relayd.log"))
	if err != nil {
		return nil, err
	}
	s.relayd = exec.Command(bin, "serve", "-c", cfgFile, "-grace", "1s")
	s.relayd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	s.relayd.Stderr = logFile
	if err := s.relayd.Start(); err != nil {
		return nil, err
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if c, err := net.Dial("tcp", s.relayAt); err == nil {
			c.Close()
			return s, nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(s.tmp, "relayd.log"))
			return nil, fmt.Errorf("relayd did not start listening:\n%s", b)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (s *setup) stop() {
	if s.relayd != nil {
		s.relayd.Process.Kill()
		s.relayd.Wait()
	}
	if s.dove != nil {
		s.dove.Stop()
	}
	if s.idp != nil {
		s.idp.Close()
	}
	os.RemoveAll(s.tmp)
}

// conn is a minimal raw POP3 client.
type conn struct {
	c  net.Conn
	br *bufio.Reader
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
	if _, err := cn.line(); err != nil {
		c.Close()
		return nil, err
	}
	return cn, nil
}

// line reads one line; a -ERR is an error.
func (c *conn) line() (string, error) {
	l, err := c.br.ReadString('\n')
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(l, "-ERR") {
		return "", errors.New(strings.TrimSpace(l))
	}
	return l, nil
}

// cmd sends a command and reads its status line.
func (c *conn) cmd(text string) (string, error) {
	if _, err := io.WriteString(c.c, text+"\r\n"); err != nil {
		return "", err
	}
	return c.line()
}

// retr reads message n and returns how many octets came.
func (c *conn) retr(n int) (int64, error) {
	l, err := c.cmd("RETR " + strconv.Itoa(n))
	if err != nil {
		return 0, err
	}
	total := int64(len(l))
	for {
		b, err := c.br.ReadSlice('\n')
		total += int64(len(b))
		if err != nil && err != bufio.ErrBufferFull {
			return total, err
		}
		if err == nil && bytes.Equal(b, []byte(".\r\n")) {
			return total, nil
		}
	}
}

// login logs in directly at Dovecot with XOAUTH2 (as relayd does), or
// through relayd with USER and PASS.
func (s *setup) login(viaRelay, tlsUp bool) (*conn, error) {
	if viaRelay {
		c, err := dial(s.relayAt, nil)
		if err != nil {
			return nil, err
		}
		user := "plain"
		if tlsUp {
			user = "tls"
		}
		if _, err := c.cmd("USER " + user); err != nil {
			return nil, err
		}
		_, err = c.cmd("PASS " + password)
		return c, err
	}
	addr, cfg := s.dove.POP3Addr, (*tls.Config)(nil)
	if tlsUp {
		addr, cfg = s.dove.POP3SAddr, &tls.Config{RootCAs: s.roots, ServerName: "127.0.0.1"}
	}
	c, err := dial(addr, cfg)
	if err != nil {
		return nil, err
	}
	if _, err := c.cmd("AUTH XOAUTH2"); err != nil {
		return nil, err
	}
	_, err = c.cmd(testkit.EncodeXOAUTH2(mailbox, s.token))
	return c, err
}

func benchRetr(s *setup, tlsUp bool) error {
	var direct, relayed []float64
	var relaydCPU float64
	var relayedBytes int64
	clientCPU := map[bool]float64{}
	clientBytes := map[bool]int64{}
	// Rounds -2 and -1 warm the page cache and both paths.
	for i := -2; i < *rounds*2; i++ {
		viaRelay := i%2 != 0
		c, err := s.login(viaRelay, tlsUp)
		if err != nil {
			return fmt.Errorf("logging in (via relayd: %v): %w", viaRelay, err)
		}
		stat, err := c.cmd("STAT")
		if err != nil {
			return err
		}
		count, _ := strconv.Atoi(strings.Fields(stat)[1])
		t0 := time.Now()
		cpu0, self0 := machine.CPUSeconds(s.relayd.Process.Pid), machine.SelfCPU()
		var n int64
		for m := 1; m <= count; m++ {
			k, err := c.retr(m)
			if err != nil {
				return err
			}
			n += k
		}
		mbps := float64(n) / 1e6 / time.Since(t0).Seconds()
		if i >= 0 {
			if viaRelay {
				relaydCPU += machine.CPUSeconds(s.relayd.Process.Pid) - cpu0
				relayedBytes += n
				relayed = append(relayed, mbps)
			} else {
				direct = append(direct, mbps)
			}
			clientCPU[viaRelay] += machine.SelfCPU() - self0
			clientBytes[viaRelay] += n
		}
		c.cmd("QUIT") // no DELE: the mailbox stays as it is
		c.c.Close()
	}
	name := "plaintext upstream"
	if tlsUp {
		name = "TLS upstream"
	}
	d, r := machine.Median(direct), machine.Median(relayed)
	fmt.Printf("%-20s direct %8.1f MB/s   relayd %8.1f MB/s   ratio %.3f   (median of %d; direct %s; relayd %s)\n",
		name, d, r, r/d, *rounds, machine.All(direct), machine.All(relayed))
	fmt.Printf("%-20s CPU per GB: relayd %.2f s; client %.2f s direct, %.2f s through relayd\n", "",
		relaydCPU/float64(relayedBytes)*1e9, clientCPU[false]/float64(clientBytes[false])*1e9,
		clientCPU[true]/float64(clientBytes[true])*1e9)
	return nil
}
