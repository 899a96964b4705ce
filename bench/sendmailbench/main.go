// Command sendmailbench measures relayd sendmail beside Postfix's own
// sendmail in the same run: -n (1,000) small messages submitted one after
// the other, each by a new process that exits once its message is on disk
// (relayd: queued and fsynced by the running daemon; Postfix: written by
// postdrop into its maildrop), reported in messages per second. Delivery
// is held on both sides (relayd's upstream does not answer; Postfix has
// defer_transports = smtp), both queues on the same filesystem.
//
// Run: go run ./bench/sendmailbench (as root, with Debian's postfix and
// dovecot-imapd). -dir chooses the filesystem; tmpfs is refused.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/bench/internal/machine"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
)

var (
	baseDir    = flag.String("dir", "/var/tmp", "directory for both queues (not tmpfs)")
	n          = flag.Int("n", 1000, "messages per side")
	rounds     = flag.Int("rounds", 3, "rounds per side, alternating; the median is reported")
	relaydPath = flag.String("relayd", "", "relayd binary (default: built from ./cmd/relayd)")
)

func main() {
	flag.Parse()
	if err := run(); err != nil {
		log.Fatal(err)
	}
}

// message is a small message as a cron job or a script sends it.
const message = "From: support@example.com\nTo: ops@example.net\nSubject: nightly backup\n\nbackup finished: 42 files, 0 errors\n"

func run() error {
	var sfs syscall.Statfs_t
	if err := syscall.Statfs(*baseDir, &sfs); err != nil {
		return err
	}
	if sfs.Type == 0x01021994 {
		return fmt.Errorf("%s is tmpfs: queue benchmarks need a real filesystem (-dir)", *baseDir)
	}
	tmp, err := os.MkdirTemp(*baseDir, "sendmailbench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	os.Chmod(tmp, 0o755)
	bin, err := machine.Relayd(*relaydPath, tmp)
	if err != nil {
		return err
	}
	idp, err := testkit.NewIdP()
	if err != nil {
		return err
	}
	defer idp.Close()
	dove, err := realserver.RunDovecot(idp, realserver.DovecotOptions{Password: "pf-pw"})
	if err != nil {
		return err
	}
	defer dove.Stop()
	pf, err := realserver.RunPostfix(dove, realserver.PostfixOptions{Dir: tmp, DeferTransports: true})
	if err != nil {
		return err
	}
	defer pf.Stop()

	dead, _ := realserver.FreeAddr() // relayd's upstream: nothing listens, mail stays queued
	hash, _ := bcrypt.GenerateFromPassword([]byte("bench-pw"), bcrypt.MinCost)
	pwFile := filepath.Join(tmp, "password")
	os.WriteFile(pwFile, []byte("x\n"), 0o600)
	cfgFile := filepath.Join(tmp, "relayd.toml")
	conf := testkit.Config{
		StateDir: filepath.Join(tmp, "state"), StatusSocket: filepath.Join(tmp, "status.sock"),
		Sendmail: []string{`default_account = "support"`},
		RetryMin: "10m", RetryMax: "30m",
		Accounts: []testkit.Account{{Name: "support", Provider: "password", Email: "support@example.com", PasswordFile: pwFile,
			SMTPServer: dead, Security: "none", Direction: "outgoing", LocalUser: "support", LocalPasswordHash: string(hash)}},
	}
	if err := os.WriteFile(cfgFile, []byte(conf.TOML()), 0o600); err != nil {
		return err
	}
	relayd := exec.Command(bin, "serve", "-c", cfgFile)
	logFile, _ := os.Create(filepath.Join(tmp, "relayd.log"))
	relayd.Stderr = logFile
	if err := relayd.Start(); err != nil {
		return err
	}
	defer func() { relayd.Process.Signal(syscall.SIGTERM); relayd.Wait() }()
	for i := 0; ; i++ {
		if exec.Command(bin, "status", "--alive", "-c", cfgFile).Run() == nil {
			break
		}
		if i > 300 {
			b, _ := os.ReadFile(logFile.Name())
			return fmt.Errorf("relayd did not start:\n%s", b)
		}
		time.Sleep(100 * time.Millisecond) // waiting for a process to start, not synchronisation of the measurement
	}

	pfSendmail, err := exec.LookPath("sendmail")
	if err != nil {
		pfSendmail = "/usr/sbin/sendmail"
	}
	sides := []struct {
		name string
		argv []string
	}{
		{"relayd sendmail", []string{bin, "sendmail", "-C", cfgFile, "-t", "-i"}},
		{"postfix sendmail", []string{pfSendmail, "-C", pf.ConfDir(), "-t", "-i"}},
	}
	fmt.Printf("machine: %s\nmessages: %d per round, %d rounds per side, sequential, each a new process\n", machine.Describe(), *n, *rounds)
	rates := make([][]float64, len(sides))
	for r := 0; r < *rounds; r++ {
		for i, s := range sides {
			start := time.Now()
			for k := 0; k < *n; k++ {
				cmd := exec.Command(s.argv[0], s.argv[1:]...)
				cmd.Stdin = strings.NewReader(message)
				if out, err := cmd.CombinedOutput(); err != nil {
					return fmt.Errorf("%s: %v\n%s", s.name, err, out)
				}
			}
			rates[i] = append(rates[i], float64(*n)/time.Since(start).Seconds())
		}
	}
	r, p := machine.Median(rates[0]), machine.Median(rates[1])
	fmt.Printf("relayd sendmail   %7.0f msg/s  (rounds: %s)\n", r, machine.All(rates[0]))
	fmt.Printf("postfix sendmail  %7.0f msg/s  (rounds: %s)\n", p, machine.All(rates[1]))
	fmt.Printf("ratio relayd/postfix: %.2f\n", r/p)
	return nil
}
