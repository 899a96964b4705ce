package realserver

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// Postfix is a real Postfix submission service (port SubmissionAddr) that
// authenticates with Dovecot's SASL (XOAUTH2 checked at the IdP) and relays
// everything to an smtp-sink, which appends each message to a dump file.
// Set up as docs/testing.md describes.
type Postfix struct {
	SubmissionAddr string
	dir, dump      string
	confDir        string
	postfix        string
	sink           *exec.Cmd
	sinkErr        testkit.SyncBuffer
	sinkDone       chan struct{}
}

// PostfixOptions tune a Postfix instance.
type PostfixOptions struct {
	// Dir is where Postfix keeps its queue. Default: a new directory under
	// the system's temporary directory.
	Dir string
	// DeferTransports holds all mail in the queue (defer_transports =
	// smtp), for measuring acceptance alone.
	DeferTransports bool
}

// StartPostfix starts Postfix and its sink; both stop when the test ends.
// It skips (or fails under RELAYD_REQUIRE_REAL=1) without Postfix.
func StartPostfix(t testing.TB, d *Dovecot) *Postfix {
	t.Helper()
	postfix := RequireBinary(t, "postfix", "postfix")
	postconf := RequireBinary(t, "postconf", "postfix")
	sinkBin := RequireBinary(t, "smtp-sink", "postfix")
	p, err := startPostfix(postfix, postconf, sinkBin, d, PostfixOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// RunPostfix starts Postfix outside a test (the benchmark harness). Call
// Stop when done.
func RunPostfix(d *Dovecot, opts PostfixOptions) (*Postfix, error) {
	var bins []string
	for _, name := range []string{"postfix", "postconf", "smtp-sink"} {
		p, err := exec.LookPath(name)
		if err != nil {
			p = "/usr/sbin/" + name
			if !fileExists(p) {
				return nil, fmt.Errorf("%s not found: install the Debian package postfix", name)
			}
		}
		bins = append(bins, p)
	}
	return startPostfix(bins[0], bins[1], bins[2], d, opts)
}

func startPostfix(postfix, postconf, sinkBin string, d *Dovecot, opts PostfixOptions) (*Postfix, error) {
	dir, err := os.MkdirTemp(opts.Dir, "relayd-postfix-")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	p := &Postfix{SubmissionAddr: fmt.Sprintf("127.0.0.1:%d", ports[0]), dir: dir, dump: filepath.Join(dir, "sink")}
	conf := filepath.Join(dir, "etc")
	for _, sub := range []string{"etc", "spool", "data", "sink"} {
		os.MkdirAll(filepath.Join(dir, sub), 0o755)
	}
	// smtp-sink runs as postfix and creates its dump files itself.
	exec.Command("chown", "postfix", filepath.Join(dir, "data"), p.dump).Run()

	// The final destination: smtp-sink writes every message to a file in
	// the sink directory.
	p.sink = exec.Command(sinkBin, "-c", "-u", "postfix", "-D", filepath.Join(p.dump, "msg"), fmt.Sprintf("127.0.0.1:%d", ports[1]), "100")
	p.sink.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // gone with this process
	p.sink.Stderr = &p.sinkErr
	if err := p.sink.Start(); err != nil {
		return nil, fmt.Errorf("starting smtp-sink: %w", err)
	}
	p.sinkDone = make(chan struct{})
	go func() { p.sink.Wait(); close(p.sinkDone) }()

	master, err := os.ReadFile("/etc/postfix/master.cf")
	if err != nil {
		return nil, err
	}
	// Our own submission port, and no chroot anywhere, so that the
	// Dovecot socket path works.
	var out []string
	for _, line := range strings.Split(string(master), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && !strings.HasPrefix(line, "#") && !strings.HasPrefix(line, " ") {
			if f[0] == "smtp" && f[1] == "inet" {
				f[0] = fmt.Sprint(ports[0])
			}
			if f[4] == "y" || f[4] == "-" {
				f[4] = "n"
			}
			line = strings.Join(f, " ")
		}
		out = append(out, line)
	}
	os.WriteFile(filepath.Join(conf, "master.cf"), []byte(strings.Join(out, "\n")), 0o644)
	main := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %[1]s/spool
data_directory = %[1]s/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = loopback-only
inet_protocols = ipv4
myhostname = postfix.test
mydestination =
alias_maps =
alias_database =
relayhost = [127.0.0.1]:%[2]d
smtpd_sasl_type = dovecot
smtpd_sasl_path = %[3]s
smtpd_sasl_auth_enable = yes
smtpd_relay_restrictions = permit_sasl_authenticated, reject
smtpd_recipient_restrictions = permit_sasl_authenticated, reject
smtpd_tls_security_level = none
smtp_tls_security_level = none
maillog_file = %[1]s/maillog
maillog_file_prefixes = %[1]s
message_size_limit = 104857600
in_flow_delay = 0s
`, dir, ports[1], d.AuthSocket())
	if opts.DeferTransports {
		main += "defer_transports = smtp\n"
	}
	os.WriteFile(filepath.Join(conf, "main.cf"), []byte(main), 0o644)

	// Postfix accepts -c only for directories the default configuration
	// lists.
	cur, _ := exec.Command(postconf, "-h", "alternate_config_directories").Output()
	list := strings.TrimSpace(string(cur))
	if list != "" {
		list += " "
	}
	if out, err := exec.Command(postconf, "-e", "alternate_config_directories = "+list+conf).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("postconf: %v: %s", err, out)
	}
	exec.Command(postfix, "-c", conf, "set-permissions").Run()
	if out, err := exec.Command(postfix, "-c", conf, "start").CombinedOutput(); err != nil {
		return nil, fmt.Errorf("postfix start: %v: %s %s", err, out, p.Log())
	}
	p.confDir = conf
	p.postfix = postfix
	if err := p.waitListening(); err != nil {
		p.Stop()
		return nil, err
	}
	return p, nil
}

// waitListening waits until the submission port accepts connections:
// Postfix has no readiness signal outside systemd.
func (p *Postfix) waitListening() error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := net.Dial("tcp", p.SubmissionAddr)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postfix did not listen on %s: %s", p.SubmissionAddr, p.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart stops Postfix (its queue stays) and starts it again: an
// upstream restart, for the soak. The sink keeps running. postfix stop
// returns before the master is gone; start is tried again until it is.
func (p *Postfix) Restart() error {
	exec.Command(p.postfix, "-c", p.confDir, "stop").Run()
	// postfix start runs postsuper as the mail owner, which logs to the
	// maillog when it finds the remains of a message cut off by the stop;
	// a root-owned maillog then makes it, and the start, fail.
	exec.Command("chown", "postfix", filepath.Join(p.dir, "maillog")).Run()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command(p.postfix, "-c", p.confDir, "start").CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postfix start: %v: %s", err, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return p.waitListening()
}

// Stop stops Postfix and the sink and removes the directory.
func (p *Postfix) Stop() {
	if p.postfix != "" {
		exec.Command(p.postfix, "-c", p.confDir, "stop").Run()
	}
	if p.sink != nil && p.sink.Process != nil {
		p.sink.Process.Kill()
		<-p.sinkDone
	}
	os.RemoveAll(p.dir)
}

// Log returns Postfix's maillog (and smtp-sink's complaints).
func (p *Postfix) Log() string {
	b, _ := os.ReadFile(filepath.Join(p.dir, "maillog"))
	return string(b) + p.sinkErr.String()
}

// Sunk returns everything smtp-sink received.
func (p *Postfix) Sunk() []byte {
	var all []byte
	des, _ := os.ReadDir(p.dump)
	for _, de := range des {
		b, _ := os.ReadFile(filepath.Join(p.dump, de.Name()))
		all = append(all, b...)
	}
	return all
}

var sentRe = regexp.MustCompile(`status=sent`)

// Sent counts the messages Postfix relayed to the sink.
func (p *Postfix) Sent() int { return len(sentRe.FindAllString(p.Log(), -1)) }

// WaitSunk waits until the sink's dump contains want.
func (p *Postfix) WaitSunk(want []byte, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if bytes.Contains(p.Sunk(), want) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// ConfDir is the instance's configuration directory, for Postfix's own
// commands (sendmail -C DIR, postqueue -c DIR).
func (p *Postfix) ConfDir() string { return p.confDir }

// MasterPID is the process ID of this instance's master, from its pid
// file; 0 if it cannot be read.
func (p *Postfix) MasterPID() int {
	b, err := os.ReadFile(filepath.Join(p.dir, "spool", "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}
