package queue_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	. "github.com/relayd/relayd/queue"
	smtptransport "github.com/relayd/relayd/transport/smtp"
)

// A real restart builds the account anew: an empty condition and the dead
// grant still stored. The fallback's forced rewrite and the hold's start
// outlive it: the held mail goes through the fallback at once (no second
// fallback_after), rewritten, and the switch to rewrite is said once.
func TestFallbackAcrossARealRestart(t *testing.T) {
	f := newFallbackEnv(t, fallbackOpts{mode: config.FallbackKeep, after: time.Minute, noQueue: true})
	f.upB.DenySendAs(testkit.ErrSendAsDenied)
	dir := f.b.Dir + "/queue"
	open := func() (*Queue, func()) {
		o := f.opts(f.clock)
		o.Dir, o.Accounts, o.Hostname = dir, f.reg.Auth, "relayd.test"
		o.Transport = smtptransport.New(smtptransport.Options{Hostname: o.Hostname})
		q, err := Open(o)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { q.Run(ctx); close(done) }()
		return q, func() { cancel(); <-done; q.Close() }
	}
	q, stop := open()
	f.b.IdP.Revoke(relaytest.Mailbox)
	id := f.submit(q, ticket, "customer@example.net")
	f.await("the hold", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	f.pass(time.Minute)
	q.Flush("support")
	f.await("delivered", func(e Event) bool { return e.ID == id && e.Kind == EventDelivered })
	stop()
	a2 := f.b.Account(testkit.Account{Direction: "outgoing", SMTPServer: f.upA.Addr, Security: "none"},
		relaytest.AccountOptions{Now: f.clock, NoGrant: true, Edit: func(c *config.Account) {
			c.FallbackAccount, c.FallbackAfter, c.FallbackFrom = "backup", time.Minute, config.FallbackKeep
		}})
	f.reg = relaytest.Registry(a2, f.fb)
	q, stop = open()
	defer stop()
	id2 := f.submit(q, ticket, "customer@example.net")
	f.await("the hold again", func(e Event) bool { return e.Kind == EventHeld && e.Account == "support" })
	q.Flush("support")
	// No f.pass: the hold began before the restart, fallback_after is over.
	f.await("delivered after the restart", func(e Event) bool { return e.ID == id2 && e.Kind == EventDelivered })
	if n := strings.Count(f.b.Logs.String(), "fallback account backup may not send as support@example.com"); n != 1 {
		t.Errorf("switch to rewrite said %d times (keep retried after restart), want once", n)
	}
}
