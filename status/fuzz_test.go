package status

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/doctor"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/sendmail"
)

// fuzzBackend is a daemon with every optional capability: doctor, key
// rotation and sendmail submissions.
type fuzzBackend struct{ fakeBackend }

func (f *fuzzBackend) Doctor(ctx context.Context, name string, req DoctorRequest) ([]doctor.Result, error) {
	if name != "support" {
		return nil, ErrUnknownAccount
	}
	_ = req.Options()
	return []doctor.Result{{Check: "token"}}, nil
}

func (f *fuzzBackend) RotateKey(k *auth.Key) (auth.RewriteResult, error) {
	return auth.RewriteResult{}, nil
}

func (f *fuzzBackend) MaySubmit(p *Peer) bool { return true }

func (f *fuzzBackend) Submit(p *Peer, req *sendmail.Request, body io.Reader) (string, string, error) {
	io.Copy(io.Discard, body)
	return "id", "support", nil
}

// FuzzAPI sends the status API arbitrary requests as an admin: every JSON
// body (grant hand-over, doctor request, key rotation, submit), every
// queue operation and target, any path. Each gets an answer with a status
// code and, for errors, a JSON body; nothing panics.
func FuzzAPI(f *testing.F) {
	for _, s := range []struct {
		method, target, body string
	}{
		{"POST", "/v1/accounts/support/grant", `{"refresh_token":"rt","granted_at":"2026-01-02T03:04:05Z"}`},
		{"POST", "/v1/accounts/nobody/grant", `{"refresh_token":1}`},
		{"POST", "/v1/accounts/support/doctor", `{"timeout_seconds":-9999999999,"send_test":true}`},
		{"POST", "/v1/accounts/support/doctor", `[`},
		{"POST", "/v1/keys/rotate", `{"key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}`},
		{"POST", "/v1/keys/rotate", `{"key":"not base64"}`},
		{"POST", "/v1/submit?from=a@b&rcpt=c@d&t=1", "Subject: x\r\n\r\nbody\r\n"},
		{"POST", "/v1/queue/hold?target=support", ""},
		{"POST", "/v1/queue/release?target=", ""},
		{"POST", "/v1/queue/flush?target=%00", ""},
		{"POST", "/v1/queue/x/retry", ""},
		{"DELETE", "/v1/queue/..%2f..%2fetc", ""},
		{"GET", "/v1/queue/x/message", ""},
		{"GET", "/v1/queue?format=text", ""},
		{"GET", "/v1/status", ""},
		{"POST", "/v1/reload", "{}"},
	} {
		f.Add(s.method, s.target, []byte(s.body))
	}
	env := relaytest.New(f)
	q := env.OpenQueue(relaytest.Registry(), queue.Options{})
	b := &fuzzBackend{fakeBackend{st: &Status{Version: "test", Banner: "all 1 mailbox ok"}, granted: map[string]*auth.Grant{}, q: q}}
	srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	admin := &Peer{UID: 0, GID: 0, PID: 1, Comm: "fuzz"}
	f.Fuzz(func(t *testing.T, method, target string, body []byte) {
		u, err := url.ParseRequestURI(target)
		if err != nil || method == "" || strings.ContainsAny(method, " \t\r\n") {
			return
		}
		r := httptest.NewRequest("GET", "/", nil)
		r.Method, r.URL, r.RequestURI = method, u, target
		r.Body, r.ContentLength = io.NopCloser(strings.NewReader(string(body))), int64(len(body))
		r = r.WithContext(context.WithValue(r.Context(), peerKey{}, admin))
		w := httptest.NewRecorder()
		srv.handler.ServeHTTP(w, r)
		if w.Code == http.StatusInternalServerError && strings.Contains(w.Body.String(), "internal error") {
			t.Fatalf("%s %s: the handler failed: %s", method, target, w.Body.String())
		}
		if w.Code >= 400 && strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") {
			var e apiError
			if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
				t.Fatalf("%s %s: %d with an unreadable error body %q", method, target, w.Code, w.Body.String())
			}
		}
	})
}
