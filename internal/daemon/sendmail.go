package daemon

import (
	"context"
	"io"
	"os"
	"time"

	"github.com/relayd/relayd/sendmail"
	"github.com/relayd/relayd/status"
)

// MaySubmit implements status.Submitter: root, relayd's own user and the
// users and groups of [sendmail] allow may hand over messages.
func (d *Daemon) MaySubmit(p *status.Peer) bool {
	return sendmail.MaySubmit(d.config(), os.Getuid(), callerOf(p))
}

// Submit implements status.Submitter: the message relayd sendmail hands
// over is prepared under the caller's credentials and the configuration
// in force, then queued durably.
func (d *Daemon) Submit(p *status.Peer, req *sendmail.Request, body io.Reader) (string, string, error) {
	env := sendmail.Env{Config: d.config(), ServiceUID: os.Getuid(), Hostname: d.hostname, Now: time.Now()}
	pm, err := sendmail.Prepare(env, callerOf(p), req, body)
	if err != nil {
		d.log.Info("sendmail: message refused", "uid", p.UID, "pid", p.PID, "command", p.Comm, "err", err)
		return "", "", err
	}
	d.log.Debug("sendmail: message header read; storing the message", "uid", p.UID, "account", pm.Account)
	id, err := d.queue.Submit(pm.Submission(d.hostname))
	if err != nil {
		return "", "", err
	}
	d.log.Info("sendmail: message queued", "id", id, "account", pm.Account, "from", pm.From, "recipients", len(pm.To),
		"uid", p.UID, "pid", p.PID, "command", p.Comm)
	return id, pm.Account, nil
}

func callerOf(p *status.Peer) sendmail.Caller {
	return sendmail.Caller{UID: p.UID, GID: p.GID, Groups: p.Groups}
}

// pickup queues what relayd sendmail left in the maildrop while the daemon
// was stopped: at start, then every minute (a message dropped while the
// daemon was starting).
func (d *Daemon) pickup(ctx context.Context) {
	t := time.NewTicker(time.Minute)
	defer t.Stop()
	for {
		n, err := sendmail.Pickup(d.config().StateDir, d.hostname, d.queue, d.log)
		if err != nil {
			d.log.Error("maildrop: messages left there wait for the next pickup", "err", err)
		}
		if n > 0 {
			d.log.Info("maildrop: picked up messages relayd sendmail left while relayd was stopped", "messages", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
