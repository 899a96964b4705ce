package health

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// An unreachable upstream makes the account degraded with a stable
// reason, naming the address; still unreachable past the retry budget it
// is disconnected (monitoring goes CRITICAL), keeping when it began; the
// first success clears it. It never counts as a reason to hold mail.
func TestOutageBudget(t *testing.T) {
	now := time.Date(2026, 11, 30, 3, 0, 0, 0, time.UTC)
	a := New("support", Options{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }, OutageBudget: 12 * time.Minute})
	refused := errors.New("dial tcp 127.0.0.1:587: connect: connection refused")
	begin := now
	a.Fail(SourceSMTP, Unreachable(SourceSMTP, "smtp.example.com:587", refused))
	s := a.Snapshot()
	if s.State != StateDegraded || s.Reason != ReasonSMTPUnreachable || !strings.Contains(s.Advice, "smtp.example.com:587") ||
		!strings.Contains(s.LastError, "connection refused") {
		t.Fatalf("after one failure: %+v", s)
	}
	if c := a.Condition(SourceSMTP); !c.Outage() || !c.Temporary() {
		t.Errorf("Outage() = %v, Temporary() = %v; want both", c.Outage(), c.Temporary())
	}
	now = now.Add(11 * time.Minute)
	a.Fail(SourceSMTP, Unreachable(SourceSMTP, "smtp.example.com:587", refused))
	if st := a.State(); st != StateDegraded {
		t.Errorf("11 minutes in: %s, want degraded", st)
	}
	now = now.Add(2 * time.Minute)
	a.Fail(SourceSMTP, Unreachable(SourceSMTP, "smtp.example.com:587", refused))
	s = a.Snapshot()
	if s.State != StateDisconnected || s.Reason != ReasonSMTPUnreachable || !s.Since.Equal(begin) || !s.State.NeedsAttention() {
		t.Errorf("13 minutes in: %+v, want disconnected since %v", s, begin)
	}
	now = now.Add(time.Minute)
	a.Fail(SourceSMTP, Unreachable(SourceSMTP, "smtp.example.com:587", refused))
	if s := a.Snapshot(); s.State != StateDisconnected || !s.Since.Equal(begin) {
		t.Errorf("still down: %s since %v, want disconnected since %v", s.State, s.Since, begin)
	}
	a.Succeed(SourceSMTP)
	if st := a.State(); st != StateOK {
		t.Errorf("after a success: %s, want ok", st)
	}
	a.Fail(SourceIMAP, Unreachable(SourceIMAP, "imap.example.com:993", refused))
	if s := a.Snapshot(); s.State != StateDegraded || s.Reason != ReasonIMAPUnreachable || !strings.Contains(s.Advice, "imap_server") {
		t.Errorf("IMAP outage: %+v", s)
	}
}
