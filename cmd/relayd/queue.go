package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/status"
)

const queueCommands = `commands:
  list [--json]        list queued, held and failed messages (postqueue -p)
  show ID              print a message's metadata and content (postcat)
  flush [ACCOUNT]      attempt delivery of queued mail now (postqueue -f)
  hold ID|ACCOUNT      hold a message, or all mail of an account (postsuper -h)
  release ID|ACCOUNT   release what hold held, and an account's held mail (postsuper -H)
  retry ID             attempt a message again now, also a failed one (postsuper -r)
  delete ID|ACCOUNT    remove a message, or every message of an account, e.g. one
                       removed from the configuration (postsuper -d)`

// queueAdmin is the queue, through the running daemon or on disk.
type queueAdmin interface {
	// list writes the queue as text (like postqueue -p) or JSON.
	list(w io.Writer, format string) error
	show(id string, w io.Writer) (*queue.Entry, error)
	// op and retry return how many messages they concerned and what
	// still holds them.
	op(op, target string) (status.QueueResult, error)
	retry(id string) (status.QueueResult, error)
	delete(id string) error
	// offline: no daemon runs, so nothing is delivered now.
	offline() bool
}

func runQueue(args []string) error {
	fs := newFlagSet("queue")
	cfgPath := configFlag(fs)
	asJSON := fs.Bool("json", false, "list as JSON")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("a queue command is needed\n%s", queueCommands)
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	admin, err := openQueueAdmin(cfg)
	if err != nil {
		return err
	}
	arg := func() (string, error) {
		if len(pos) != 2 {
			return "", usagef("queue %s takes one argument", pos[0])
		}
		return pos[1], nil
	}
	switch pos[0] {
	case "list":
		format := "text"
		if *asJSON {
			format = "json"
		}
		return admin.list(os.Stdout, format)
	case "show":
		id, err := arg()
		if err != nil {
			return err
		}
		var msg strings.Builder
		e, err := admin.show(id, &msg)
		if err != nil {
			return err
		}
		b, _ := json.MarshalIndent(e, "", "  ")
		fmt.Printf("%s\n\n%s", b, msg.String())
	case "flush":
		target := ""
		if len(pos) == 2 {
			target = pos[1]
		}
		r, err := admin.op("flush", target)
		if err != nil {
			return err
		}
		switch {
		case admin.offline():
			fmt.Printf("relayd is not running, so nothing is delivered now: start it (systemctl start relayd) and it tries the queued mail at once\n")
		case len(r.Holds) == 0:
			fmt.Printf("%d message(s) due now\n", r.Count)
		default:
			fmt.Printf("%d message(s) due now; held mail stays held (flush lifts no hold):\n", r.Count)
		}
		printHolds(r.Holds)
	case "hold", "release":
		target, err := arg()
		if err != nil {
			return err
		}
		r, err := admin.op(pos[0], target)
		if err != nil {
			return err
		}
		done := map[string]string{"hold": "held", "release": "released"}[pos[0]]
		if len(r.Holds) > 0 {
			fmt.Printf("%s: %s, but its mail is still held:\n", target, done)
		} else if cfg.Account(target) != nil {
			fmt.Printf("account %q: %s (%d queued message(s))\n", target, done, r.Count)
		} else {
			fmt.Printf("%s: %s\n", target, done)
		}
		printHolds(r.Holds)
	case "retry":
		id, err := arg()
		if err != nil {
			return err
		}
		r, err := admin.retry(id)
		if err != nil {
			return err
		}
		switch {
		case len(r.Holds) > 0:
			fmt.Printf("%s: due again, but held: it goes out once released\n", id)
		case admin.offline():
			fmt.Printf("%s: due again; relayd is not running, so it goes out once relayd starts\n", id)
		default:
			fmt.Printf("%s: queued for delivery now\n", id)
		}
		printHolds(r.Holds)
	case "delete":
		id, err := arg()
		if err != nil {
			return err
		}
		if err := admin.delete(id); err != nil {
			return err
		}
		fmt.Printf("%s: deleted\n", id)
	default:
		return usagef("unknown queue command %q\n%s", pos[0], queueCommands)
	}
	return nil
}

// openQueueAdmin talks to the daemon when it runs, else opens the spool
// itself.
func openQueueAdmin(cfg *config.Config) (queueAdmin, error) {
	c := status.NewClient(cfg.StatusSocket)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := c.Status(ctx); err == nil {
		return remoteQueue{c}, nil
	} else if !errors.Is(err, status.ErrNotRunning) {
		return nil, err
	}
	q, err := openSpool(cfg, 0)
	if err != nil {
		return nil, err
	}
	return localQueue{q}, nil
}

// openSpool opens the queue on disk with no daemon running, as the state
// directory's owner (dropToStateOwner), waiting up to wait for another
// relayd command that holds it. Close it when done.
func openSpool(cfg *config.Config, wait time.Duration) (*queue.Queue, error) {
	if err := dropToStateOwner(cfg.StateDir); err != nil {
		return nil, err
	}
	return queue.Open(queue.Options{
		Dir:      filepath.Join(cfg.StateDir, "queue"),
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		LockWait: wait,
		Accounts: func(name string) *auth.Account {
			if a := cfg.Account(name); a != nil {
				return &auth.Account{Config: a}
			}
			return nil
		},
	})
}

type remoteQueue struct{ c *status.Client }

// The status client's own timeout bounds these calls.
func (r remoteQueue) list(w io.Writer, format string) error {
	return r.c.QueueListTo(context.Background(), w, format)
}
func (r remoteQueue) show(id string, w io.Writer) (*queue.Entry, error) {
	return r.c.QueueShow(context.Background(), id, w)
}
func (r remoteQueue) op(op, target string) (status.QueueResult, error) {
	return r.c.QueueOp(context.Background(), op, target)
}
func (r remoteQueue) retry(id string) (status.QueueResult, error) {
	return r.c.QueueRetry(context.Background(), id)
}
func (r remoteQueue) delete(id string) error { return r.c.QueueDelete(context.Background(), id) }
func (r remoteQueue) offline() bool          { return false }

type localQueue struct{ q *queue.Queue }

func (l localQueue) list(w io.Writer, format string) error {
	return queue.WriteList(w, l.q.List(), format, time.Now())
}
func (l localQueue) show(id string, w io.Writer) (*queue.Entry, error) {
	e, err := l.q.Get(id)
	if err != nil {
		return nil, err
	}
	m, err := l.q.Message(id)
	if err != nil {
		return nil, err
	}
	defer m.Close()
	_, err = io.Copy(w, m)
	return e, err
}
func (l localQueue) op(op, target string) (status.QueueResult, error) {
	n, err := l.q.Apply(queue.Op(op), target)
	if err != nil || queue.Op(op) == queue.OpHold {
		return status.QueueResult{Count: n}, err
	}
	return status.QueueResult{Count: n, Holds: l.q.Holds(target)}, nil
}
func (l localQueue) retry(id string) (status.QueueResult, error) {
	if err := l.q.Retry(id); err != nil {
		return status.QueueResult{}, err
	}
	return status.QueueResult{Count: 1, Holds: l.q.Holds(id)}, nil
}
func (l localQueue) delete(id string) error { return l.q.Delete(id) }
func (l localQueue) offline() bool          { return true }

// printHolds says, one line each, what still holds mail after a flush,
// release or retry, and what releases it.
func printHolds(hs []queue.Hold) {
	for _, h := range hs {
		fmt.Printf("  %s\n", h)
	}
}
