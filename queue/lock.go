package queue

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/relayd/relayd/internal/statedir"
)

// ErrSpoolBusy means another process uses the spool: one relayd, or one
// offline relayd queue command, at a time.
var ErrSpoolBusy = errors.New("queue in use by another process")

// lockSpool takes the spool's lock, like Postfix's master lock: two
// processes delivering from one spool would send every message twice, and
// an offline relayd queue command must not edit it under a starting
// daemon. It waits up to wait for the holder to let go, and writes this
// process's ID into the lock file so that the next one can name it. The
// file is opened through the spool's directory descriptor and never
// through a link (package statedir).
func lockSpool(d *statedir.Dir, wait time.Duration) (*os.File, error) {
	// Readable by all, so that a daemon running as its own user can
	// still lock a file root made with an offline relayd queue command
	// (flock works on a read-only descriptor).
	f, err := d.OpenFile("lock", os.O_CREATE|os.O_RDWR, 0o644)
	if errors.Is(err, os.ErrPermission) {
		f, err = d.OpenFile("lock", os.O_RDONLY, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("locking queue: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if err != syscall.EWOULDBLOCK {
			f.Close()
			return nil, fmt.Errorf("locking queue %s: %w", d.Path(), err)
		}
		if !time.Now().Before(deadline) {
			holder := "another process"
			if b, err := d.ReadFile("lock"); err == nil {
				if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
					holder = "process " + strconv.Itoa(pid)
				}
			}
			f.Close()
			return nil, fmt.Errorf("%w: %s uses %s (a running relayd, or a 'relayd queue' command); one relayd per state_dir, and try a queue command again once the daemon answers on its status socket",
				ErrSpoolBusy, holder, d.Path())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// Close lets another process use the spool. Call it after Run has
// returned; the queue is unusable afterwards.
func (q *Queue) Close() error {
	if q.lock == nil {
		return nil
	}
	err := q.lock.Close() // closing releases the flock
	q.lock = nil
	q.spool.Close()
	return err
}
