package queue

import (
	"context"
	"time"
)

// A delivered message whose files cannot be removed (a read-only or
// failing disk) would be sent again by the next start's recovery. The
// queue keeps its ID and tries again every RetryMin until the removal
// works; only a restart before then sends it twice.

// removeDelivered removes delivered message id from the spool, or keeps
// trying in the background.
func (q *Queue) removeDelivered(id string) {
	err := q.spool.Remove(id)
	if err == nil {
		return
	}
	q.mu.Lock()
	if q.leftovers == nil {
		q.leftovers = map[string]bool{}
	}
	q.leftovers[id] = true
	ctx, every := q.ctx, q.opts.RetryMin
	start := !q.sweeping && ctx != nil
	if start {
		q.sweeping = true
		q.wg.Add(1) // a worker (the caller) is running: Run is not past its Wait
	}
	q.mu.Unlock()
	q.log.Error("delivered message could not be removed from the spool; relayd keeps trying, and a restart before it succeeds sends it again",
		"id", id, "err", err)
	if start {
		go q.sweepLeftovers(ctx, every)
	}
}

// sweepLeftovers retries the removal of q.leftovers every interval until
// none is left or ctx ends.
func (q *Queue) sweepLeftovers(ctx context.Context, every time.Duration) {
	defer q.wg.Done()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			q.mu.Lock()
			q.sweeping = false
			q.mu.Unlock()
			return
		case <-t.C:
		}
		q.mu.Lock()
		ids := make([]string, 0, len(q.leftovers))
		for id := range q.leftovers {
			ids = append(ids, id)
		}
		q.mu.Unlock()
		for _, id := range ids {
			if err := q.spool.Remove(id); err == nil {
				q.log.Info("delivered message removed from the spool", "id", id)
				q.mu.Lock()
				delete(q.leftovers, id)
				q.mu.Unlock()
			}
		}
		q.mu.Lock()
		if len(q.leftovers) == 0 {
			q.sweeping = false
			q.mu.Unlock()
			return
		}
		q.mu.Unlock()
	}
}
