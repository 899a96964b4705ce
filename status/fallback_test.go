package status

import (
	"bytes"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/queue"
)

// fallbackStatus is one account whose mail goes through its fallback,
// which was refused Send As and rewrites From.
func fallbackStatus(now time.Time) *Status {
	return &Status{Banner: "1 of 2 mailboxes needs reauthorization: support", Accounts: []Account{{
		Name: "support", Email: "support@example.com", Provider: "office365", Direction: "outgoing",
		Snapshot: health.Snapshot{State: health.StateNeedsReauth, Advice: "run 'relayd authorize support'", HeldSince: now.Add(-time.Hour)},
		Queue: &queue.AccountStats{Held: 1, SentViaFallback: 3, Fallback: &queue.FallbackStats{Account: "backup", Mode: "rewrite",
			ForcedRewrite: true, Active: true, Starts: now.Add(-45 * time.Minute)}},
	}, {
		Name: "backup", Email: "backup@example.com", Provider: "office365", Direction: "outgoing", Queue: &queue.AccountStats{},
	}}}
}

// Status says that the fallback sends, how, how much, and that it was
// made to rewrite From.
func TestRenderFallback(t *testing.T) {
	now := time.Now()
	var b bytes.Buffer
	Render(&b, fallbackStatus(now), now)
	for _, want := range []string{
		"outgoing mail goes out through fallback account backup since 45m ago (From rewritten to its mailbox, Reply-To the sender); 3 sent so far",
		"fallback account backup may not send as account support's address (SendAsDenied): it rewrites From until 'relayd authorize support'",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("Render lacks %q:\n%s", want, b.String())
		}
	}
	st := fallbackStatus(now)
	st.Accounts[0].Queue.Fallback = &queue.FallbackStats{Account: "backup", Mode: "keep", Starts: now.Add(10 * time.Minute)}
	st.Accounts[0].Queue.SentViaFallback = 0
	b.Reset()
	Render(&b, st, now)
	if want := "outgoing mail goes out through fallback account backup in 10m unless this is fixed first (the sender's From kept)"; !strings.Contains(b.String(), want) {
		t.Errorf("Render lacks %q:\n%s", want, b.String())
	}
	js, err := json.Marshal(fallbackStatus(now).Accounts[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"sent_via_fallback":3`, `"fallback":{"account":"backup","mode":"rewrite","forced_rewrite":true,"active":true,"starts":`} {
		if !strings.Contains(string(js), want) {
			t.Errorf("status JSON lacks %s: %s", want, js)
		}
	}
}

// relayd_sent_via_fallback_total and relayd_fallback_active, for the
// accounts that have a fallback only.
func TestMetricsFallback(t *testing.T) {
	m := NewMetrics(&fakeBackend{st: fallbackStatus(time.Now())}, "test", "none")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		"# TYPE relayd_sent_via_fallback_total counter",
		`relayd_sent_via_fallback_total{account="support"} 3`,
		`relayd_fallback_active{account="support"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, `relayd_sent_via_fallback_total{account="backup"}`) {
		t.Error("an account without a fallback has a fallback counter")
	}
}
