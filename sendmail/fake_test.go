package sendmail

import (
	"fmt"
	"io"
	"log/slog"

	"github.com/relayd/relayd/queue"
)

type fakeQueue struct{ got []string }

func (q *fakeQueue) Submit(s *queue.Submission) (string, error) {
	id := fmt.Sprintf("Q%d", len(q.got)+1)
	b, err := io.ReadAll(s.Body)
	if err != nil {
		return "", err
	}
	q.got = append(q.got, s.Trace(id)+string(b))
	return id, nil
}

func discard() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
