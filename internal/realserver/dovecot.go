package realserver

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// Dovecot is a real Dovecot started from its own configuration in a scratch
// directory, checking XOAUTH2 tokens against an IdP's introspection
// endpoint (see docs/testing.md). It listens on loopback only.
type Dovecot struct {
	IMAPAddr  string // plaintext IMAP
	IMAPSAddr string // implicit TLS, with CertPEM
	POP3Addr  string // plaintext POP3
	POP3SAddr string // implicit TLS POP3, with CertPEM
	CertPEM   []byte
	// Password is the static password of every user, for tests that
	// compare with a direct plain login.
	Password string

	dir, conf string
	bin       string
	doveadm   string
	proc      *exec.Cmd
	exited    chan struct{}
}

// DovecotOptions tune StartDovecot.
type DovecotOptions struct {
	// MaxSessions raises Dovecot's per-user and process limits, for
	// benchmarks that hold many sessions.
	MaxSessions int
	// Password is every user's static password. Default: random.
	Password string
}

// StartDovecot starts Dovecot and stops it when the test ends. It skips
// (or fails under RELAYD_REQUIRE_REAL=1) when Dovecot is not installed.
func StartDovecot(t testing.TB, idp *testkit.IdP, opts DovecotOptions) *Dovecot {
	t.Helper()
	bin := RequireBinary(t, "dovecot", "dovecot-imapd")
	doveadm := RequireBinary(t, "doveadm", "dovecot-core")
	d, err := startDovecot(bin, doveadm, idp.IntrospectURL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Stop)
	return d
}

// RunDovecot starts Dovecot outside a test (the benchmark harness). Call
// Stop when done.
func RunDovecot(idp *testkit.IdP, opts DovecotOptions) (*Dovecot, error) {
	bin, err := exec.LookPath("dovecot")
	if err != nil {
		return nil, errors.New("dovecot not found: install the Debian package dovecot-imapd")
	}
	doveadm, err := exec.LookPath("doveadm")
	if err != nil {
		return nil, errors.New("doveadm not found: install the Debian package dovecot-core")
	}
	return startDovecot(bin, doveadm, idp.IntrospectURL(), opts)
}

// FillMaildir writes count messages of about size bytes each straight into
// user's maildir (faster than doveadm save for benchmark mailboxes).
func (d *Dovecot) FillMaildir(user string, count, size int) error {
	local, _, _ := strings.Cut(user, "@")
	root := filepath.Join(d.dir, "mail", local)
	for _, sub := range []string{"cur", "new", "tmp"} {
		if err := os.MkdirAll(filepath.Join(root, sub), 0o700); err != nil {
			return err
		}
	}
	line := strings.Repeat("0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 1) + "\r\n"
	body := strings.Repeat(line, size/len(line)+1)
	for i := 0; i < count; i++ {
		msg := fmt.Sprintf("From: bench@example.com\r\nTo: %s\r\nSubject: bench %d\r\nMessage-ID: <bench-%d@example.com>\r\n\r\n%s", user, i, i, body)
		name := filepath.Join(root, "new", fmt.Sprintf("%d.M%dP1.bench", 1700000000+i, i))
		if err := os.WriteFile(name, []byte(msg), 0o600); err != nil {
			return err
		}
	}
	return exec.Command("chown", "-R", "mail:mail", root).Run()
}

func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	var ports []int
	for len(ports) < n {
		ln, err := listenBelowEphemeral()
		if err != nil {
			return nil, err
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreeAddr returns a loopback address nothing listens on, for a server
// another process will bind (a real Dovecot, Postfix, or relayd).
func FreeAddr() (string, error) {
	ports, err := freePorts(1)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("127.0.0.1:%d", ports[0]), nil
}

// listenBelowEphemeral listens on a random loopback port below the
// kernel's ephemeral range. A port the kernel picked for ":0" comes from
// that range, and so do the local ports of outgoing connections: between
// closing it and the other process binding it, a connection (to the IdP,
// say) may take it, and the bind fails with "address already in use".
func listenBelowEphemeral() (net.Listener, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const base = 10000
	if low <= base+1000 {
		return net.Listen("tcp", "127.0.0.1:0")
	}
	var err error
	for i := 0; i < 100; i++ {
		var ln net.Listener
		if ln, err = net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+rand.IntN(low-base))); err == nil {
			return ln, nil
		}
	}
	return nil, fmt.Errorf("no free loopback port below %d: %w", low, err)
}

func startDovecot(bin, doveadm, introspectURL string, opts DovecotOptions) (*Dovecot, error) {
	dir, err := os.MkdirTemp("", "relayd-dovecot-")
	if err != nil {
		return nil, err
	}
	// Dovecot's unprivileged login processes must reach base_dir.
	os.Chmod(dir, 0o755)
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	cert, certPEM, err := testkit.SelfSigned("127.0.0.1")
	if err != nil {
		return nil, err
	}
	_ = cert
	keyPEM, err := testkit.PEMKey(cert)
	if err != nil {
		return nil, err
	}
	os.WriteFile(filepath.Join(dir, "cert.pem"), certPEM, 0o644)
	os.WriteFile(filepath.Join(dir, "key.pem"), keyPEM, 0o600)
	mail := filepath.Join(dir, "mail")
	os.MkdirAll(mail, 0o755)
	exec.Command("chown", "-R", "mail:mail", mail).Run()
	limit := opts.MaxSessions
	if limit < 100 {
		limit = 100
	}
	// Login processes proxying TLS take at most 1,000 clients each, so
	// that none runs out of file descriptors.
	loginClients := min(limit*4, 1000)
	d := &Dovecot{
		IMAPAddr:  fmt.Sprintf("127.0.0.1:%d", ports[0]),
		IMAPSAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
		POP3Addr:  fmt.Sprintf("127.0.0.1:%d", ports[2]),
		POP3SAddr: fmt.Sprintf("127.0.0.1:%d", ports[3]),
		CertPEM:   certPEM,
		Password:  opts.Password,
		dir:       dir,
		conf:      filepath.Join(dir, "dovecot.conf"),
		doveadm:   doveadm,
	}
	if d.Password == "" {
		d.Password = fmt.Sprintf("static-%012x", rand.Int64())
	}
	oauth := fmt.Sprintf(`introspection_mode = post
introspection_url = %s
username_attribute = email
active_attribute = active
active_value = true
force_introspection = yes
`, introspectURL)
	os.WriteFile(filepath.Join(dir, "oauth2.conf"), []byte(oauth), 0o644)
	conf := fmt.Sprintf(`base_dir = %[1]s/run
state_dir = %[1]s/state
log_path = %[1]s/dovecot.log
instance_name = relayd-test-%[2]d
listen = 127.0.0.1
protocols = imap pop3
ssl = yes
ssl_cert = <%[1]s/cert.pem
ssl_key = <%[1]s/key.pem
disable_plaintext_auth = no
auth_mechanisms = plain login xoauth2 oauthbearer
mail_location = maildir:%[1]s/mail/%%n
mail_uid = mail
mail_gid = mail
first_valid_uid = 8
mail_max_userip_connections = %[3]d
default_process_limit = %[3]d
default_client_limit = %[4]d
passdb {
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = %[1]s/oauth2.conf
}
passdb {
  driver = static
  args = password=%[5]s
}
userdb {
  driver = static
  args = uid=mail gid=mail home=%[1]s/mail/%%n
}
service imap-login {
  inet_listener imap {
    port = %[6]d
  }
  inet_listener imaps {
    port = %[7]d
    ssl = yes
  }
  process_limit = %[3]d
  client_limit = %[9]d
  service_count = 0
}
service pop3-login {
  inet_listener pop3 {
    port = %[8]d
  }
  inet_listener pop3s {
    port = %[10]d
    ssl = yes
  }
}
service imap {
  process_limit = %[3]d
}
service auth {
  unix_listener auth-client {
    mode = 0666
  }
}
`, dir, ports[0], limit, limit*4, d.Password, ports[0], ports[1], ports[2], loginClients, ports[3])
	if err := os.WriteFile(d.conf, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	d.bin = bin
	if err := d.launch(); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return d, nil
}

// launch starts the Dovecot master from d's configuration and returns
// once it accepts IMAP connections.
func (d *Dovecot) launch() error {
	// -F keeps the master in the foreground, as our child.
	var stderr bytes.Buffer
	d.proc = exec.Command(d.bin, "-F", "-c", d.conf)
	d.proc.Stderr = &stderr
	// Should this process die without stopping it (a test binary
	// killed at its timeout, a benchmark interrupted), so does Dovecot:
	// its children leave with their master.
	d.proc.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := d.proc.Start(); err != nil {
		return fmt.Errorf("starting dovecot: %v", err)
	}
	exited := make(chan struct{})
	d.exited = exited
	proc := d.proc
	go func() { proc.Wait(); close(exited) }()
	// Wait until the listeners accept: Dovecot has no readiness signal
	// outside systemd.
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := net.Dial("tcp", d.IMAPAddr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("dovecot exited: %s %s", stderr.String(), d.Log())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			d.stop()
			return fmt.Errorf("dovecot did not listen on %s: %s", d.IMAPAddr, d.Log())
		}
	}
}

// stop stops the master and its children (SIGTERM, then SIGKILL after 10
// seconds) and removes the master.pid a kill leaves behind.
func (d *Dovecot) stop() {
	// SIGTERM lets the master stop its children too.
	d.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(10 * time.Second):
		d.proc.Process.Kill()
		<-d.exited
	}
	os.Remove(filepath.Join(d.dir, "run", "master.pid"))
}

// Restart stops Dovecot and starts it again from the same configuration
// and mail, on the same ports: an upstream restart, for the soak. Sessions
// open through it end.
func (d *Dovecot) Restart() error {
	d.stop()
	return d.launch()
}

// Stop kills Dovecot and removes its directory.
func (d *Dovecot) Stop() {
	d.stop()
	os.RemoveAll(d.dir)
}

// AuthSocket is the path of Dovecot's SASL socket for Postfix
// (smtpd_sasl_type = dovecot).
func (d *Dovecot) AuthSocket() string { return filepath.Join(d.dir, "run", "auth-client") }

// Log returns Dovecot's log so far.
func (d *Dovecot) Log() string {
	b, _ := os.ReadFile(filepath.Join(d.dir, "dovecot.log"))
	return string(b)
}

// Deliver saves msg into user's INBOX with doveadm.
func (d *Dovecot) Deliver(user string, msg []byte) error {
	cmd := exec.Command(d.doveadm, "-c", d.conf, "save", "-u", user)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("doveadm save: %v: %s", err, out)
	}
	return nil
}
