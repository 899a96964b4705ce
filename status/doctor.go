package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/relayd/relayd/doctor"
)

// DoctorBackend is a Backend that runs the checks of relayd doctor that
// need an account's tokens (doctor.Credentials) inside the daemon, with
// the account's own token source: the refresh they make is the daemon's,
// so no refresh token is rotated behind its back.
type DoctorBackend interface {
	// Doctor checks account name; ErrUnknownAccount when the daemon has
	// no such account. The results hold no token.
	Doctor(ctx context.Context, name string, req DoctorRequest) ([]doctor.Result, error)
}

// DoctorRequest is what relayd doctor asks of the daemon: each check's
// timeout, and whether to send a test message.
type DoctorRequest struct {
	TimeoutSeconds int  `json:"timeout_seconds,omitempty"`
	SendTest       bool `json:"send_test,omitempty"`
}

// Options are the doctor options the request asks for; a timeout is kept
// between 1 second and 2 minutes.
func (r DoctorRequest) Options() doctor.Options {
	o := doctor.Options{SendTest: r.SendTest}
	if r.TimeoutSeconds > 0 {
		o.Timeout = time.Duration(min(max(r.TimeoutSeconds, 1), 120)) * time.Second
	}
	return o
}

// handleDoctor answers POST /v1/accounts/{name}/doctor (admins only: it
// refreshes the account's grant).
func (s *Server) handleDoctor(w http.ResponseWriter, r *http.Request) {
	d, ok := s.backend.(DoctorBackend)
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: "this relayd does not run doctor's checks"})
		return
	}
	s.slowCall(w) // refreshes a token and logs in upstream
	var req DoctorRequest
	if r.ContentLength != 0 {
		if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
			writeJSON(w, http.StatusBadRequest, apiError{Error: "the doctor request is not JSON {timeout_seconds, send_test}"})
			return
		}
	}
	rs, err := d.Doctor(r.Context(), r.PathValue("name"), req)
	switch {
	case errors.Is(err, ErrUnknownAccount):
		writeJSON(w, http.StatusNotFound, apiError{Error: err.Error(), Code: codeUnknownAccount})
	case err != nil:
		writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
	default:
		writeJSON(w, http.StatusOK, rs)
	}
}

// Doctor asks the daemon to run doctor's checks of account name that need
// its tokens, with its own token source. ErrPermission for a caller
// without the admin role; ErrNotRunning when no daemon answers.
func (c *Client) Doctor(ctx context.Context, name string, req DoctorRequest) ([]doctor.Result, error) {
	var rs []doctor.Result
	err := c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(name)+"/doctor", req, &rs)
	return rs, err
}
