package queue

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/fault"
)

// bounce queues a delivery status notification (RFC 3464) about failed
// recipients of e to its sender, from the mailbox of account acct and
// under it (providers may refuse the null sender): e's own account, or
// the fallback account that tried to send e. A DSN about a DSN is never
// sent.
func (q *Queue) bounce(e *Entry, failed []Recipient, acct string) {
	if e.From == "" {
		return
	}
	defer func() {
		if v := recover(); v != nil {
			q.mu.Lock()
			acct := q.account(e.Account)
			q.mu.Unlock()
			health.Recovered(q.log, q.health(acct), "building a delivery status notification about "+e.ID, v)
		}
	}()
	fault.Hit("dsn")
	creds := q.opts.Accounts(acct)
	if creds == nil {
		return
	}
	header := q.originalHeader(e.ID)
	msg := buildDSN(q.opts.Hostname, creds.Config.Email, e, failed, header, q.opts.Now())
	id, err := q.Submit(&Submission{
		Account: acct, From: creds.Config.Email, To: []string{e.From},
		Body: bytes.NewReader(msg), DSN: true,
	})
	if err != nil {
		q.log.Error("could not queue a delivery status notification", "id", e.ID, "account", acct, "err", err)
		return
	}
	q.log.Info("delivery status notification queued", "id", id, "about", e.ID, "to", e.From, "account", acct)
}

// originalHeader returns the header of a stored message (for the DSN's
// text/rfc822-headers part), at most 64 KiB.
func (q *Queue) originalHeader(id string) []byte {
	f, err := q.spool.Open(id)
	if err != nil {
		return nil
	}
	defer f.Close()
	header, _, _ := scanHeader(bufio.NewReader(io.LimitReader(f, 64<<10)))
	return header
}

func buildDSN(hostname, from string, e *Entry, failed []Recipient, header []byte, now time.Time) []byte {
	boundary := "relayd-dsn-" + e.ID
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Mail Delivery System <%s>\r\n", from)
	fmt.Fprintf(&b, "To: <%s>\r\n", e.From)
	fmt.Fprintf(&b, "Subject: Undelivered Mail Returned to Sender\r\n")
	fmt.Fprintf(&b, "Date: %s\r\n", now.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Auto-Submitted: auto-replied\r\n")
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", boundary)
	fmt.Fprintf(&b, "This is relayd at %s.\r\n\r\nYour message %s could not be delivered to these recipients:\r\n\r\n", hostname, e.MessageID)
	for _, r := range failed {
		fmt.Fprintf(&b, "  <%s>: %s\r\n", r.Addr, oneLine(r.Reply))
	}
	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: message/delivery-status\r\n\r\n", boundary)
	fmt.Fprintf(&b, "Reporting-MTA: dns; %s\r\nX-Relayd-Queue-ID: %s\r\nArrival-Date: %s\r\n", hostname, e.ID, e.Created.Format(time.RFC1123Z))
	for _, r := range failed {
		fmt.Fprintf(&b, "\r\nFinal-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n", r.Addr, dsnStatus(r))
		if r.Reply != "" {
			fmt.Fprintf(&b, "Diagnostic-Code: smtp; %s\r\n", oneLine(r.Reply))
		}
	}
	fmt.Fprintf(&b, "\r\n--%s\r\nContent-Type: text/rfc822-headers\r\n\r\n", boundary)
	b.Write(header)
	fmt.Fprintf(&b, "\r\n--%s--\r\n", boundary)
	return b.Bytes()
}

// dsnStatus is the recipient's status code for a DSN (RFC 3464 §2.3.4):
// the upstream's enhanced status code when it sent one, else the class of
// its reply code, else 5.0.0 (relayd gave up).
func dsnStatus(r Recipient) string {
	switch {
	case r.Enhanced != "":
		return r.Enhanced
	case r.Code >= 400 && r.Code < 600:
		return fmt.Sprintf("%d.0.0", r.Code/100)
	}
	return "5.0.0"
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
