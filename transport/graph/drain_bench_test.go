package graph_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

// BenchmarkDrainBacklog drains a held backlog of 1,000 messages to the
// fake Graph endpoint and, in the same run, to the fake SMTP upstream
// (no rate limit; Graph's 4 requests in flight, SMTP's 2 connections of
// provider "custom"), and reports messages per second:
//
//	go test -bench DrainBacklog -run - -benchtime 3x ./transport/graph
func BenchmarkDrainBacklog(b *testing.B) {
	const backlog = 1000
	for _, transport := range []string{"smtp", "graph"} {
		b.Run(transport, func(b *testing.B) {
			e := relaytest.New(b)
			acct := testkit.Account{Direction: "outgoing", Transport: transport}
			var graph *testkit.Graph
			var up *testkit.SMTPUpstream
			if transport == "graph" {
				graph = testkit.StartGraph(b, e.IdP)
				acct.GraphURL = graph.URL
			} else {
				up = e.SMTPUpstream(testkit.SMTPOptions{})
				acct.SMTPServer, acct.Security = up.Addr, "none"
			}
			a := e.Account(acct, relaytest.AccountOptions{})
			delivered := make(chan queue.Event, 2*backlog)
			q := e.Queue(relaytest.Registry(a), queue.Options{OnEvent: func(ev queue.Event) {
				if ev.Kind == queue.EventDelivered {
					delivered <- ev
				}
			}})
			msg := "From: " + relaytest.Mailbox + "\r\nTo: r@example.net\r\nSubject: drain\r\n\r\n" + strings.Repeat("x", 2000) + "\r\n"
			var total time.Duration
			b.ResetTimer()
			for range b.N {
				b.StopTimer()
				if _, err := q.Hold("support"); err != nil {
					b.Fatal(err)
				}
				for i := range backlog {
					if _, err := q.Submit(&queue.Submission{Account: "support", From: relaytest.Mailbox,
						To: []string{fmt.Sprintf("r%d@example.net", i%7)}, Body: strings.NewReader(msg)}); err != nil {
						b.Fatal(err)
					}
				}
				b.StartTimer()
				start := time.Now()
				if _, err := q.Release("support"); err != nil {
					b.Fatal(err)
				}
				for range backlog {
					select {
					case <-delivered:
					case <-time.After(60 * time.Second):
						b.Fatal("drain stalled")
					}
				}
				total += time.Since(start)
			}
			b.ReportMetric(float64(backlog*b.N)/total.Seconds(), "msgs/s")
		})
	}
}
