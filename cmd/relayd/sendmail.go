package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/sendmail"
	"github.com/relayd/relayd/status"
)

const sendmailUsage = "sendmail [-t] [-i | -oi] [-f ADDRESS] [-F NAME] [-C FILE] [-v] [--] [RECIPIENT ...] < MESSAGE"

const sendmailMore = `The message is read on standard input; without -i (or -oi) a line with a
single dot ends it. Options:
  -t          read recipients from To:, Cc: and Bcc: (added to those given)
  -i, -oi     a line with a single dot does not end the message
  -f ADDRESS  the envelope sender (also -r): chooses the account whose email
              or send_as it is; without it, From: with -t, else
              [sendmail] default_account
  -F NAME     the sender's name, for the From: field relayd adds when the
              message has none
  -C FILE     relayd's configuration (default /etc/relayd/relayd.toml); a
              user who may not read it uses /run/relayd/sendmail.sock
  -v          print the queue ID
Accepted and ignored: -B -G -L -N -O -R -U -V -X -c -e -h -m -n -p -x -bm,
and -o other than -oi (-odi, -odb, -oem, -oee, ...). Not supported: -bs,
-bp, -bd, -bi, -bv, -q, -I (relayd queue does the queue's work).

relayd sendmail hands the message to the running daemon over the sendmail
socket and exits 0 once it is queued on disk. Root and relayd's own user may
send as any account; other users as [sendmail] allow says. With the daemon
stopped, root and relayd's own user leave the message in the maildrop
(state_dir/maildrop), which the daemon queues when it starts; others get
EX_TEMPFAIL. The same program runs as relayd-sendmail.

exit status (sysexits.h): 0 queued, 64 usage, 65 bad message (too large, an
unreadable address field), 67 an address no account sends as or not a full
address, 70 internal error, 75 try again later (relayd stopped, disk full),
77 not allowed to send as that account, 78 bad configuration`

// defaultSendmailSocket is where relayd sendmail finds the daemon when it
// may not read the configuration.
const defaultSendmailSocket = "/run/relayd/sendmail.sock"

// runSendmail is relayd sendmail (and relayd-sendmail): sendmail(8) for
// scripts and cron jobs. Its exit statuses are sendmail's.
func runSendmail(args []string) error {
	if len(args) == 1 && args[0] == "-h" {
		args = []string{"--help"}
	}
	a, err := sendmail.ParseArgs(args)
	if err != nil {
		return sendmailFail(err)
	}
	if a.Help {
		fmt.Printf("usage: relayd %s\n\n%s\n\n%s\n", sendmailUsage, lookup("sendmail").summary, sendmailMore)
		return nil
	}
	cfgPath := a.Config
	if cfgPath == "" {
		cfgPath = defaultConfig
	}
	// A user in [sendmail] allow (www-data) may not read the
	// configuration, which holds password hashes; it needs only the
	// socket, at its default path then.
	cfg, err := config.Load(cfgPath)
	var cfgErr error // a configuration that does not validate: the daemon may still run
	if err != nil && !errors.Is(err, fs.ErrPermission) && !(errors.Is(err, fs.ErrNotExist) && a.Config == "") {
		cfgErr, cfg = err, nil
	}
	socket := defaultSendmailSocket
	switch {
	case cfg != nil:
		socket = cfg.SendmailSocket()
	case cfgErr != nil:
		if s, ok := config.SendmailSocketOf(cfgPath); ok {
			socket = s
		}
	}
	var in io.Reader = os.Stdin
	if !a.IgnoreDots {
		in = sendmail.DotReader(in)
	}
	// The daemon answers within its slow-call limit (10 minutes) or not
	// at all (stopped with SIGSTOP, hung): a cron job must not wait for
	// ever.
	ctx, cancel := context.WithTimeout(context.Background(), 11*time.Minute)
	defer cancel()
	res, err := status.NewClient(socket).Submit(ctx, &a.Request, in)
	switch {
	case err == nil:
		if a.Verbose {
			fmt.Printf("relayd sendmail: queued as %s (account %s)\n", res.ID, res.Account)
		}
		return nil
	case errors.Is(err, status.ErrNotRunning) && cfgErr != nil:
		return sendmailFail(&sendmail.Error{Code: sendmail.ExConfig, Msg: fmt.Sprintf(
			"relayd is not running (nothing answers on %s), and %s cannot be used to leave the message in the maildrop: %v", socket, cfgPath, cfgErr)})
	case errors.Is(err, status.ErrNotRunning):
		return sendmailFail(sendmailOffline(cfg, a, in, socket))
	case errors.Is(err, context.DeadlineExceeded):
		return sendmailFail(&sendmail.Error{Code: sendmail.ExTempFail, Msg: fmt.Sprintf(
			"relayd did not answer on %s within 11 minutes: the message may or may not have been queued ('relayd queue list' tells); try again later", socket)})
	}
	return sendmailFail(err)
}

// sendmailOffline leaves the message in the maildrop when the daemon is
// not running, if this user may: root and state_dir's owner.
func sendmailOffline(cfg *config.Config, a *sendmail.Args, in io.Reader, socket string) error {
	if cfg == nil {
		return &sendmail.Error{Code: sendmail.ExTempFail, Msg: fmt.Sprintf(
			"relayd is not running (nothing answers on %s): nothing was sent; try again once it runs", socket)}
	}
	owner := -1
	if fi, err := os.Stat(cfg.StateDir); err == nil {
		owner = int(fi.Sys().(*syscall.Stat_t).Uid)
	}
	uid := os.Getuid()
	if uid != 0 && uid != owner {
		return &sendmail.Error{Code: sendmail.ExTempFail, Msg: fmt.Sprintf(
			"relayd is not running (nothing answers on %s): nothing was sent; try again once it runs "+
				"(only root and relayd's own user may leave mail in the maildrop while it is stopped)", socket)}
	}
	groups, _ := os.Getgroups()
	caller := sendmail.Caller{UID: uid, GID: os.Getgid(), Groups: groups}
	if err := dropToStateOwner(cfg.StateDir); err != nil {
		return err
	}
	hostname, _ := os.Hostname()
	env := sendmail.Env{Config: cfg, ServiceUID: owner, Hostname: hostname, Now: time.Now()}
	p, err := sendmail.Prepare(env, caller, &a.Request, in)
	if err != nil {
		return err
	}
	path, err := sendmail.Drop(cfg.StateDir, p)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "relayd sendmail: relayd is not running: the message waits in %s; relayd queues it when it starts\n", path)
	return nil
}

// sendmailFail prints err and returns the exit status sendmail's callers
// expect for it (nil for nil).
func sendmailFail(err error) error {
	if err == nil {
		return nil
	}
	code := sendmail.ExTempFail // unknown trouble: the caller keeps the message
	var se *sendmail.Error
	switch {
	case errors.As(err, &se):
		code = se.Code
	case errors.Is(err, sendmail.ErrTooLarge):
		code, err = sendmail.ExDataErr, errors.New("the message is larger than [smtp] max_message_size: nothing was queued")
	default:
		err = fmt.Errorf("%w: nothing was queued; try again later", err)
	}
	fmt.Fprintf(os.Stderr, "relayd sendmail: %v\n", err)
	if code == sendmail.ExUsage {
		fmt.Fprintf(os.Stderr, "usage: relayd %s\n", sendmailUsage)
	}
	return exitError{code}
}
