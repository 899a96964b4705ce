package graph

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/queue"
)

// FuzzGraphAnswer reads arbitrary answers to sendMail (status code,
// Retry-After, JSON error body): each becomes a result whose reply is one
// line, with a wait of at most a day, and no 5xx or 429 fails a message
// for good.
func FuzzGraphAnswer(f *testing.F) {
	for _, s := range []struct {
		status int
		retry  string
		body   string
	}{
		{202, "", ""},
		{429, "30", `{"error":{"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}}`},
		{503, "Wed, 02 Dec 2026 12:00:00 GMT", `{"error":{"code":"ServiceUnavailable","message":"x"}}`},
		{403, "", `{"error":{"code":"ErrorSendAsDenied","message":"The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account."}}`},
		{413, "", "<html>too large</html>"},
		{400, "-1", `{"error":{"code":"ErrorInvalidRecipients","message":"line\nbreak\u001b[31m"}}`},
		{200, "99999999999999999999", `{"error":{"code":""}}`},
		{500, "", `{"error":`},
	} {
		f.Add(s.status, s.retry, []byte(s.body))
	}
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := &conn{t: New(Options{Now: func() time.Time { return now }}),
		a: &auth.Account{Config: &config.Account{Name: "support", Email: "support@example.com", GraphURL: "https://graph.microsoft.com"}}}
	f.Fuzz(func(t *testing.T, status int, retry string, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		resp := &http.Response{StatusCode: status, Header: http.Header{"Retry-After": {retry}}, Body: io.NopCloser(bytes.NewReader(body))}
		r := c.classify(resp, "someone@example.org")
		if strings.ContainsAny(r.Reply, "\r\n") {
			t.Fatalf("reply is not one line: %q", r.Reply)
		}
		if r.RetryAfter < 0 || r.RetryAfter > 24*time.Hour+time.Second {
			t.Fatalf("Retry-After %q gave a wait of %s", retry, r.RetryAfter)
		}
		if (status/100 == 5 || status == 429) && r.State != queue.RcptPending {
			t.Fatalf("%d failed the message for good: %+v", status, r)
		}
	})
}
