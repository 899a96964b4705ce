package queue

import (
	"context"
	"io"
	"strings"
	"time"

	"github.com/relayd/relayd/auth"
)

// Transport hands an account's messages to its provider: SMTP with
// XOAUTH2 (package transport/smtp) or, for accounts that say so, another
// way. The scheduler never knows which; it opens a Conn, delivers over it
// and records what comes back, the way maddy's queue hands messages to a
// DeliveryTarget.
type Transport interface {
	// Open logs in for account a (through package upstream). Errors: a
	// *health.Error already reported to a.Health — an outage
	// (Error.Outage) defers the account's mail, any other condition holds
	// it (health.Account.ReviewHold decides; a temporary one is probed)
	// — ctx.Err() when ctx ended, or any other error, which is temporary.
	Open(ctx context.Context, a *auth.Account) (Conn, error)
}

// Conn delivers messages over one login: an SMTP connection, reused with
// RSET between messages.
type Conn interface {
	// Deliver sends m. It returns one Result for each of m.To, in order,
	// and a non-nil error when the connection broke (then the results
	// not yet known are temporary).
	Deliver(ctx context.Context, m *Message) ([]Result, error)
	// Reset readies the connection for the next message; an error ends
	// it.
	Reset() error
	// Close ends the session politely.
	Close() error
}

// Message is what a transport delivers: one queued message and the
// recipients still to try.
type Message struct {
	ID   string
	From string
	To   []string
	Size int64
	// Open returns the stored message, Received: trace header and all.
	Open func() (io.ReadCloser, error)
}

// Result is one recipient's outcome, with the upstream's reply as text for
// people and as codes for DSNs.
type Result struct {
	// State is RcptSent, RcptFailed (permanent) or RcptPending (try
	// again).
	State    RcptState
	Reply    string
	Code     int
	Enhanced string // "5.1.1"; empty when the server sent none
	// RetryAfter, for a temporary result, is how long the provider asked
	// relayd to wait (Graph's 429 and 503 Retry-After): the next attempt
	// comes exactly that much later, never sooner, and the attempt does
	// not count toward the message's backoff.
	RetryAfter time.Duration
}

// SendAsDenied reports whether r is the upstream refusing the message's
// From (or MAIL FROM) because the mailbox has no Send As right for it:
// Exchange's 5.7.60 and 554 5.2.252 SendAsDenied over SMTP, Graph's
// ErrorSendAsDenied (which transport/graph reports as 5.7.60).
func SendAsDenied(r Result) bool {
	return r.Enhanced == "5.7.60" || r.Enhanced == "5.2.252" || strings.Contains(r.Reply, "SendAsDenied")
}
