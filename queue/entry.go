package queue

import (
	"crypto/rand"
	"encoding/hex"
	"strconv"
	"strings"
	"time"
)

// State of a queued message.
type State string

// Message states; see the package documentation.
const (
	StateQueued State = "queued"
	StateHeld   State = "held"
	StateFailed State = "failed"
)

// RcptState is what became of one recipient.
type RcptState string

// Recipient states.
const (
	RcptPending RcptState = "pending"
	RcptSent    RcptState = "sent"
	RcptFailed  RcptState = "failed"
)

// Recipient is one envelope recipient and what became of it.
type Recipient struct {
	Addr  string    `json:"addr"`
	State RcptState `json:"state"`
	// Reply is the upstream's last reply for this recipient, as text.
	Reply string `json:"reply,omitempty"`
	// Code and Enhanced are that reply's code (550) and enhanced status
	// code (RFC 3463, "5.1.1"; empty when the server sent none), so that
	// DSNs and classification never parse Reply.
	Code     int    `json:"code,omitempty"`
	Enhanced string `json:"enhanced,omitempty"`
}

// upgrade fills what a spool written by an older relayd lacks: reply codes
// were kept only in the reply's text.
func (e *Entry) upgrade() {
	for i := range e.Recipients {
		r := &e.Recipients[i]
		if r.Code != 0 || r.Reply == "" {
			continue
		}
		f := strings.Fields(r.Reply)
		if len(f) == 0 || len(f[0]) != 3 {
			continue
		}
		code, err := strconv.Atoi(f[0])
		if err != nil {
			continue
		}
		r.Code = code
		if len(f) > 1 && strings.Count(f[1], ".") == 2 && f[1][0] == f[0][0] {
			r.Enhanced = f[1]
		}
	}
}

// Entry is a queued message's metadata.
type Entry struct {
	ID         string      `json:"id"`
	Account    string      `json:"account"`
	From       string      `json:"from"`
	Recipients []Recipient `json:"recipients"`
	Size       int64       `json:"size"`
	MessageID  string      `json:"message_id,omitempty"`
	Created    time.Time   `json:"created"`
	State      State       `json:"state"`
	// AdminHold is set when an admin held the message (relayd queue hold);
	// account holds are not stored per message.
	AdminHold   bool      `json:"admin_hold,omitempty"`
	Attempts    int       `json:"attempts"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	LastError   string    `json:"last_error,omitempty"`
	// Frozen is time spent held because of the account: it does not count
	// towards the message's lifetime.
	Frozen time.Duration `json:"frozen,omitempty"`
	// DSN marks a delivery status notification relayd generated: when it
	// fails, no notification about it is sent.
	DSN bool `json:"dsn,omitempty"`
}

// pending returns the recipients still to be delivered.
func (e *Entry) pending() []int {
	var idx []int
	for i, r := range e.Recipients {
		if r.State == RcptPending {
			idx = append(idx, i)
		}
	}
	return idx
}

// age is how long the message has been in the queue, not counting time
// its account held it.
func (e *Entry) age(now time.Time) time.Duration {
	return now.Sub(e.Created) - e.Frozen
}

func (e *Entry) clone() *Entry {
	c := *e
	c.Recipients = append([]Recipient(nil), e.Recipients...)
	return &c
}

// newID returns a queue ID that sorts by arrival: time, then randomness.
func newID(now time.Time) string {
	b := make([]byte, 5)
	rand.Read(b)
	return strings.Replace(now.UTC().Format("20060102T150405.000000"), ".", "", 1) + "-" + hex.EncodeToString(b)
}
