package queue_test

import (
	"context"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	. "github.com/relayd/relayd/queue"
)

// openPanics is a transport whose every Open panics.
type openPanics struct{ opens atomic.Int64 }

func (p *openPanics) Open(context.Context, *auth.Account) (Conn, error) {
	p.opens.Add(1)
	panic("injected: Open fails the same way every time")
}

// A transport that panics on every Open does not make the account's
// worker spin: the batch waits retry_min, as after a temporary failure.
func TestOpenPanicDoesNotSpin(t *testing.T) {
	b := relaytest.New(t)
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: "127.0.0.1:1", Security: "none"}, relaytest.AccountOptions{})
	tr := &openPanics{}
	q := b.Queue(relaytest.Registry(acct), Options{Transport: tr, RetryMin: time.Hour})
	id, err := q.Submit(&Submission{Account: "support", From: mailbox, To: []string{"a@example.net"}, Body: strings.NewReader("Subject: p\r\n\r\nx\r\n")})
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		e, err := q.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if tr.opens.Load() > 0 && time.Until(e.NextAttempt) > 30*time.Minute {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %d panicking Opens the message is due at %s", tr.opens.Load(), e.NextAttempt)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, not synchronising on time
	}
	if n := tr.opens.Load(); n > 2 {
		t.Errorf("%d Opens: the worker spun", n)
	}
}
