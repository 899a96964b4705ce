package health

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

// Every reason an account's mail waits is answered by Outgoing: an admin's
// hold, a condition that needs a person once the queue held for it; an
// outage never holds. Quarantined messages are listed in the snapshot.
func TestOutgoingHolds(t *testing.T) {
	a, _, now := newTest(t)
	if held, why, _ := a.Outgoing(); held {
		t.Fatalf("new account: held (%s)", why)
	}
	if !a.SetAdminHold(true) || a.SetAdminHold(true) {
		t.Error("SetAdminHold(true) twice: want a change the first time only")
	}
	if held, why, probe := a.Outgoing(); !held || why != "admin" || probe {
		t.Errorf("admin hold: Outgoing() = %v, %q, probe %v", held, why, probe)
	}
	if s := a.Snapshot(); !s.AdminHoldSince.Equal(*now) {
		t.Errorf("AdminHoldSince = %v, want %v", s.AdminHoldSince, *now)
	}
	a.SetAdminHold(false)

	a.Fail(SourceSMTP, Unreachable(SourceSMTP, "smtp.example.com:587", errors.New("refused")))
	if started, _ := a.ReviewHold(true); started {
		t.Error("an outage holds mail; want it deferred only")
	}
	a.Fail(SourceSMTP, &Error{State: StateDegraded, Reason: ReasonUpstreamAuthDeferred})
	a.ReviewHold(true)
	if held, why, probe := a.Outgoing(); !held || why != string(ReasonUpstreamAuthDeferred) || !probe {
		t.Errorf("AUTH refused for now: Outgoing() = %v, %q, probe %v; want held, probed", held, why, probe)
	}
	a.Fail(SourceSMTP, &Error{State: StateNeedsAdmin, Reason: ReasonSMTPAuthDisabled})
	if held, why, probe := a.Outgoing(); !held || why != string(ReasonSMTPAuthDisabled) || probe {
		t.Errorf("SMTP AUTH disabled: Outgoing() = %v, %q, probe %v; want held until it changes", held, why, probe)
	}
	if s := a.Snapshot(); s.HeldSince.IsZero() {
		t.Error("held, but the snapshot says no hold")
	}
	a.Succeed(SourceSMTP)
	if _, ended := a.ReviewHold(true); ended == 0 {
		t.Error("the hold did not end with its condition")
	}
	if held, why, _ := a.Outgoing(); held {
		t.Errorf("after the condition ended: held (%s)", why)
	}

	*now = now.Add(time.Minute)
	a.Quarantine("20261130T030000-1", "relayd failed delivering it")
	if q := a.Snapshot().Quarantined; q["20261130T030000-1"] == "" {
		t.Errorf("snapshot quarantined = %v", q)
	}
	if !a.Unquarantine("20261130T030000-1") || len(a.Snapshot().Quarantined) != 0 {
		t.Error("Unquarantine did not end the quarantine")
	}
}

// HoldingSince names the condition that holds the mail and since when
// the account has had it, not when a repeated report came, and never an
// IMAP condition or an outage.
func TestHoldingSince(t *testing.T) {
	now := time.Date(2026, 11, 30, 9, 0, 0, 0, time.UTC)
	a := New("support", Options{Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	if c, since := a.HoldingSince(); c != nil || !since.IsZero() {
		t.Fatalf("ok account: HoldingSince = %v, %v", c, since)
	}
	a.Fail(SourceIMAP, &Error{State: StateNeedsReauth, Reason: ReasonGrantRevoked})
	a.Fail(SourceSMTP, Unreachable(SourceSMTP, "smtp.example.com:587", errors.New("refused")))
	if c, _ := a.HoldingSince(); c != nil {
		t.Fatalf("IMAP condition and an outage: HoldingSince = %v, want none", c)
	}
	begin := now
	a.Fail(SourceToken, &Error{State: StateNeedsReauth, Reason: ReasonGrantRevoked})
	now = now.Add(10 * time.Minute)
	a.Fail(SourceToken, &Error{State: StateNeedsReauth, Reason: ReasonGrantRevoked})
	if c, since := a.HoldingSince(); c == nil || c.Reason != ReasonGrantRevoked || !since.Equal(begin) {
		t.Errorf("HoldingSince = %v, %v; want grant_revoked since %v", c, since, begin)
	}
}
