package smtp_test

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
	smtptransport "github.com/relayd/relayd/transport/smtp"
)

// failingReader hands out some of a message, then fails as a broken disk
// would.
type failingReader struct{ r io.Reader }

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, errors.New("read error: input/output error")
	}
	return n, err
}

func (f *failingReader) Close() error { return nil }

// A message the spool cannot hand over whole never reaches the upstream,
// neither empty nor cut short: the recipients stay pending.
func TestSpoolErrorSendsNothing(t *testing.T) {
	b := relaytest.New(t)
	up := b.SMTPUpstream(testkit.SMTPOptions{})
	acct := b.Account(testkit.Account{Direction: "outgoing", SMTPServer: up.Addr, Security: "none"}, relaytest.AccountOptions{})
	tr := smtptransport.New(smtptransport.Options{Hostname: "relayd.test"})
	for _, tc := range []struct {
		name string
		open func() (io.ReadCloser, error)
	}{
		{"cannot open", func() (io.ReadCloser, error) { return nil, errors.New("open: input/output error") }},
		{"fails half way", func() (io.ReadCloser, error) {
			return &failingReader{strings.NewReader("Subject: half\r\n\r\n" + strings.Repeat("x", 100000))}, nil
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tr.Open(context.Background(), acct.Account)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			results, _ := c.Deliver(context.Background(), &queue.Message{ID: "m1", From: relaytest.Mailbox, To: []string{"a@example.net"}, Open: tc.open})
			if len(results) != 1 || results[0].State != queue.RcptPending {
				t.Errorf("results = %+v, want the recipient pending", results)
			}
		})
	}
	if n := len(up.Messages()); n != 0 {
		t.Errorf("the upstream accepted %d message(s) the spool could not hand over", n)
	}
}
