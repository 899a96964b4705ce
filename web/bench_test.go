package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// The main page of a relayd with 100 mailboxes, through the listener
// (its status read, rendered and sent): the target is under 50
// ms. go test -run '^$' -bench MainPage100 ./web/
func BenchmarkMainPage100Mailboxes(b *testing.B) {
	c := startConsole(b, consoleOpts{extra: 98})
	br := c.signIn(true)
	p := br.get("/")
	if p.StatusCode != http.StatusOK || strings.Count(p.body, "<tr id=\"mailbox-") != 100 {
		b.Fatalf("GET /: %s, %d rows", p.Status, strings.Count(p.body, "<tr id=\"mailbox-"))
	}
	b.SetBytes(int64(len(p.body)))
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		br.get("/")
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/page")
}

// How long an open page waits to learn of a state change, with the
// default update interval (250 ms): the target is under 1 s.
// go test -run '^$' -bench LiveUpdate -benchtime 20x ./web/
func BenchmarkLiveUpdate(b *testing.B) {
	c := startConsole(b, consoleOpts{update: 250 * time.Millisecond})
	br := c.signIn(false)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ev := br.events(ctx)
	testkit.Await(b, ev, "the first update", 10*time.Second, func(e [2]string) bool { return e[0] == "mailboxes" })
	var total, worst time.Duration
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		c.send("sales-desk", "sales@example.com", "customer@example.net", "held")
		want := ", " + itoa(i+1) + " held"
		testkit.Await(b, ev, "the update", 10*time.Second, func(e [2]string) bool { return e[0] == "mailboxes" && strings.Contains(e[1], want) })
		d := time.Since(start)
		total += d
		worst = max(worst, d)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/update")
	b.ReportMetric(float64(worst.Milliseconds()), "ms-worst")
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}
