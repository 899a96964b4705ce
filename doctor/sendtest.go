package doctor

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/mail"
	"strings"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/transport"
	graphtransport "github.com/relayd/relayd/transport/graph"
	smtptransport "github.com/relayd/relayd/transport/smtp"
)

// SendTest sends one short message from account a's mailbox to itself
// through the account's own transport (SMTP, or Microsoft Graph), as the
// queue would, and says what the upstream answered. It is what
// 'relayd doctor --send-test' adds: the other checks never send mail. a's
// condition is not changed by what the upstream says (a is doctor's
// shadow of the account), but a refresh its token source makes is the
// account's, as every refresh is.
func SendTest(ctx context.Context, a *auth.Account, o Options) Result {
	o = o.withDefaults()
	cfg := a.Config
	via := "SMTP (" + cfg.SMTPServer + ")"
	if cfg.Graph() {
		via = "Microsoft Graph (" + cfg.GraphURL + ")"
	}
	t := transport.ByAccount{
		SMTP:  smtptransport.New(smtptransport.Options{Hostname: hostname(), Timeout: o.Timeout, Dialer: o.Dialer}),
		Graph: graphtransport.New(graphtransport.Options{Client: o.HTTPClient, Logger: a.Health.Logger()}),
	}
	c, err := t.Open(ctx, a)
	if err != nil {
		fix, what := "see the login check above", "could not log in to send through "+via+safeErr(err)
		if he := health.AsError(err); he != nil {
			fix, what = he.Advice, what+": "+words(he)
		}
		return fail(cfg.Name, "send_test", what, fix)
	}
	defer c.Close()
	now := o.Now()
	msg := fmt.Sprintf("From: %s\r\nTo: %s\r\nSubject: relayd doctor: test message from account %s\r\nDate: %s\r\nMessage-ID: <doctor-%d@%s>\r\n\r\n"+
		"'relayd doctor --send-test' sent this message through %s to check that account %q can send mail.\r\nIt needs no answer.\r\n",
		cfg.Email, cfg.Email, cfg.Name, now.Format(time.RFC1123Z), now.UnixNano(), hostname(), via, cfg.Name)
	if _, err := mail.ParseAddress(cfg.Email); err != nil {
		return fail(cfg.Name, "send_test", fmt.Sprintf("email %q is not an address a message can go to", cfg.Email), "correct email in the configuration")
	}
	m := &queue.Message{ID: "doctor-send-test", From: cfg.Email, To: []string{cfg.Email}, Size: int64(len(msg)),
		Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader([]byte(msg))), nil }}
	rs, err := c.Deliver(ctx, m)
	if err != nil || len(rs) == 0 {
		return fail(cfg.Name, "send_test", "sending through "+via+" failed"+safeErr(err), "see the checks above, and the upstream's answer")
	}
	r := rs[0]
	reply := safetext.Line(r.Reply)
	switch r.State {
	case queue.RcptSent:
		return pass(cfg.Name, "send_test", fmt.Sprintf("sent a test message to %s through %s: %s", cfg.Email, via, reply))
	case queue.RcptFailed:
		fix := "the upstream refused the message: its answer says why"
		if queue.SendAsDenied(r) {
			fix = fmt.Sprintf("the mailbox may not send as %s: grant it Send As", cfg.Email)
		}
		return fail(cfg.Name, "send_test", "the upstream refused the test message: "+reply, fix)
	default:
		return warn(cfg.Name, "send_test", "the upstream deferred the test message: "+reply, "try again later; relayd's queue retries such answers by itself")
	}
}

// safeErr is ": " and err's text, bounded and escaped, or "".
func safeErr(err error) string {
	if err == nil || health.AsError(err) != nil {
		return ""
	}
	return ": " + strings.TrimSpace(safetext.Line(err.Error()))
}
