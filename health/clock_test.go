package health

import (
	"testing"
	"time"
)

// The grant's forecast is a date on the wall clock (when the provider
// will end the grant), and whether it is near is decided again from the
// clock at every look: after the clock jumps an hour forward, an account
// whose grant now ends within the warning days turns warning, with the
// same predicted date; an hour back, it is ok again. Nothing about it was
// computed once and kept.
func TestForecastRecomputedAfterClockJump(t *testing.T) {
	a, _, now := newTest(t)
	start := *now
	at := start.Add(10*24*time.Hour + 30*time.Minute)
	a.SetForecast(Forecast{At: at, Why: "90 days without use"})
	if s := a.Snapshot(); s.State != StateOK || s.Warning != "" {
		t.Fatalf("10 days and 30 minutes ahead: %s %q, want ok", s.State, s.Warning)
	}
	*now = start.Add(time.Hour)
	if s := a.Snapshot(); s.State != StateWarning || s.Reason != ReasonGrantExpiresSoon || !s.GrantExpires.Equal(at) {
		t.Errorf("after a jump of +1h: %s %s, expires %s; want warning, grant_expires_soon, %s", s.State, s.Reason, s.GrantExpires, at)
	}
	*now = start.Add(-time.Hour)
	if s := a.Snapshot(); s.State != StateOK || !s.GrantExpires.Equal(at) {
		t.Errorf("after a jump back to -1h: %s, expires %s; want ok, %s", s.State, s.GrantExpires, at)
	}
}
