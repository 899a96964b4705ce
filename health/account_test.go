package health

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func newTest(t *testing.T) (*Account, *bytes.Buffer, *time.Time) {
	t.Helper()
	var log bytes.Buffer
	now := time.Date(2026, 11, 24, 9, 0, 0, 0, time.UTC)
	a := New("support", Options{Logger: slog.New(slog.NewTextHandler(&log, nil)), Now: func() time.Time { return now }})
	return a, &log, &now
}

// An account whose token works but whose SMTP AUTH is switched off needs
// an admin, and a working IMAP login does not hide that.
func TestWorstSourceDecides(t *testing.T) {
	a, _, now := newTest(t)
	a.Fail(SourceSMTP, &Error{State: StateNeedsAdmin, Reason: ReasonSMTPAuthDisabled, Advice: "enable SMTP AUTH"})
	*now = now.Add(time.Minute)
	a.Fail(SourceToken, &Error{State: StateDegraded, Reason: ReasonTokenEndpointUnreachable})
	a.Succeed(SourceIMAP)
	if e := a.Current(); e == nil || e.Reason != ReasonSMTPAuthDisabled || e.Account != "support" {
		t.Fatalf("Current() = %+v, want the SMTP condition", e)
	}
	s := a.Snapshot()
	if s.State != StateNeedsAdmin || s.Advice != "enable SMTP AUTH" || !s.Since.Equal(now.Add(-time.Minute)) {
		t.Errorf("Snapshot() = %+v", s)
	}
	a.Succeed(SourceSMTP)
	if st := a.State(); st != StateDegraded {
		t.Errorf("after SMTP works: %s, want degraded (the token endpoint)", st)
	}
	a.Reset()
	if st := a.State(); st != StateOK {
		t.Errorf("after Reset: %s, want ok", st)
	}
	if s := a.Snapshot(); s.LastError == "" || s.LastSuccess.IsZero() {
		t.Errorf("the last error and success are kept: %+v", s)
	}
}

func TestChangedWakesOnEveryChange(t *testing.T) {
	a, _, _ := newTest(t)
	for _, change := range []func(){
		func() { a.Fail(SourceToken, &Error{State: StateNeedsReauth, Reason: ReasonGrantRevoked}) },
		func() { a.ReviewHold(true) }, // starts the hold
		func() { a.Reset() },
		func() { a.ReviewHold(true) }, // ends it
	} {
		ch := a.Changed()
		change()
		select {
		case <-ch:
		default:
			t.Fatal("Changed() not closed by a change")
		}
	}
}

func TestHoldMeasuresFrozenTime(t *testing.T) {
	a, _, now := newTest(t)
	if started, ended := a.ReviewHold(true); started || ended != 0 {
		t.Errorf("ReviewHold without a condition = %v, %s", started, ended)
	}
	a.Fail(SourceToken, &Error{State: StateNeedsReauth, Reason: ReasonGrantRevoked})
	if started, _ := a.ReviewHold(false); started {
		t.Error("a hold started with no mail waiting")
	}
	if started, _ := a.ReviewHold(true); !started {
		t.Error("no hold started for a dead grant with mail waiting")
	}
	if started, _ := a.ReviewHold(true); started {
		t.Error("ReviewHold reports the start of a hold twice")
	}
	*now = now.Add(90 * time.Minute)
	a.Reset() // a new grant
	if _, ended := a.ReviewHold(true); ended != 90*time.Minute {
		t.Errorf("ReviewHold after the new grant: ended after %s, want 1h30m", ended)
	}
	if !a.HeldSince().IsZero() {
		t.Error("hold still set")
	}
}

// A condition seen by a hundred connections is logged once; recovery once.
func TestChangesLoggedOnce(t *testing.T) {
	a, log, _ := newTest(t)
	for range 100 {
		a.Fail(SourceIMAP, &Error{State: StateNeedsReauth, Reason: ReasonUpstreamRejectedToken, Advice: "run 'relayd authorize support'",
			Err: errors.New("upstream said: NO")})
	}
	a.Succeed(SourceIMAP)
	a.Succeed(SourceIMAP)
	out := log.String()
	if n := strings.Count(out, "account needs attention"); n != 1 {
		t.Errorf("condition logged %d times:\n%s", n, out)
	}
	if n := strings.Count(out, "account ok again"); n != 1 {
		t.Errorf("recovery logged %d times:\n%s", n, out)
	}
	if !strings.Contains(out, "reason=upstream_rejected_token") || !strings.Contains(out, "account=support") {
		t.Errorf("log line lacks the account or reason:\n%s", out)
	}
}

func TestTemporary(t *testing.T) {
	if !Temporary(errors.New("unknown")) {
		t.Error("an unknown error must be temporary")
	}
	if Temporary(&Error{State: StateNeedsReauth}) || !Temporary(&Error{State: StateDegraded}) {
		t.Error("Temporary follows the state")
	}
	wrapped := errors.Join(errors.New("context"), &Error{State: StateNeedsAdmin})
	if Temporary(wrapped) || AsError(wrapped) == nil {
		t.Error("a wrapped condition is found")
	}
}
