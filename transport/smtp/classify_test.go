package smtp

import (
	"errors"
	"testing"

	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayd/relayd/queue"
)

// Replies are classified by their codes; provider throttles defer even
// with a 5xx code; no reply at all is a broken connection.
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		name     string
		err      error
		state    queue.RcptState
		broken   bool
		reply    string
		enhanced string
	}{
		{"accepted", nil, queue.RcptSent, false, "", ""},
		{"unknown user", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 1, 1}, Message: "no such user"}, queue.RcptFailed, false, "550 5.1.1 no such user", "5.1.1"},
		{"greylisted", &gosmtp.SMTPError{Code: 451, EnhancedCode: gosmtp.EnhancedCode{4, 7, 1}, Message: "try later"}, queue.RcptPending, false, "451 4.7.1 try later", "4.7.1"},
		{"Exchange quota", &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.EnhancedCode{5, 2, 0}, Message: "STOREDRV.Submission.Exception:SubmissionQuotaExceededException"}, queue.RcptPending, false, "", "5.2.0"},
		{"Gmail daily limit", &gosmtp.SMTPError{Code: 550, EnhancedCode: gosmtp.EnhancedCode{5, 4, 5}, Message: "Daily user sending limit exceeded"}, queue.RcptPending, false, "", "5.4.5"},
		{"no enhanced code", &gosmtp.SMTPError{Code: 554, EnhancedCode: gosmtp.NoEnhancedCode, Message: "rejected"}, queue.RcptFailed, false, "554 rejected", ""},
		{"connection reset", errors.New("read: connection reset by peer"), queue.RcptPending, true, "read: connection reset by peer", ""},
	} {
		r, broken := classify(tc.err)
		if r.State != tc.state || broken != tc.broken || r.Enhanced != tc.enhanced || tc.reply != "" && r.Reply != tc.reply {
			t.Errorf("%s: classify() = %+v, broken %v; want %s, broken %v, reply %q, enhanced %q",
				tc.name, r, broken, tc.state, tc.broken, tc.reply, tc.enhanced)
		}
	}
}
