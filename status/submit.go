package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/relayd/relayd/sendmail"
)

// Submitter is the optional capability of a Backend that takes messages
// from relayd sendmail (POST /v1/submit).
type Submitter interface {
	// MaySubmit reports whether p may send as any account at all:
	// others are refused before their message is read.
	MaySubmit(p *Peer) bool
	// Submit prepares the message read from body for p (package
	// sendmail: the account, its envelope policy, [sendmail] allow) and
	// queues it durably, returning its queue ID and account. A refusal
	// is a *sendmail.Error.
	Submit(p *Peer, req *sendmail.Request, body io.Reader) (id, account string, err error)
}

// SubmitResult answers POST /v1/submit.
type SubmitResult struct {
	ID      string `json:"id"`
	Account string `json:"account"`
}

// The submit permission: POST /v1/submit, on the status socket and on the
// sendmail socket, takes a message from root, relayd's own user, or a user
// that [sendmail] allow names (by user or group) for the account the
// message is sent as. It grants nothing else: the sendmail socket serves no
// other call, and being in that map makes nobody a reader or an admin of
// the status socket.

// handleSubmit queues a message from relayd sendmail: the request in the
// query (from, name, t, rcpt), the message as the body. It answers only
// once the message is durable.
func (s *Server) handleSubmit(w http.ResponseWriter, r *http.Request) {
	sub, ok := s.backend.(Submitter)
	p, _ := r.Context().Value(peerKey{}).(*Peer)
	if !ok || p == nil {
		writeJSON(w, http.StatusNotFound, apiError{Error: "this daemon takes no messages from relayd sendmail", Exit: sendmail.ExTempFail})
		return
	}
	if !sub.MaySubmit(p) {
		// Before reading anything: the client sent Expect: 100-continue
		// and gets this answer instead of sending its message.
		s.log.Warn("sendmail socket: refused a message from a user [sendmail] allow does not name", "uid", p.UID, "pid", p.PID, "command", p.Comm)
		writeJSON(w, http.StatusForbidden, apiError{Error: fmt.Sprintf(
			"uid %d may not send mail through relayd: an admin grants it in [sendmail] allow", p.UID), Code: codePermission, Exit: sendmail.ExNoPerm})
		return
	}
	s.slowCall(w) // a message may be large and its sender slow
	q := r.URL.Query()
	req := &sendmail.Request{From: q.Get("from"), FullName: q.Get("name"), ExtractRecipients: q.Get("t") == "1", Recipients: q["rcpt"]}
	id, account, err := sub.Submit(p, req, r.Body)
	if err == nil {
		writeJSON(w, http.StatusOK, SubmitResult{ID: id, Account: account})
		return
	}
	var se *sendmail.Error
	switch {
	case errors.As(err, &se):
		status := http.StatusUnprocessableEntity
		if se.Code == sendmail.ExNoPerm {
			status = http.StatusForbidden
		}
		// Read what the client still sends, so that it reads this
		// answer rather than a broken pipe.
		io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		writeJSON(w, status, apiError{Error: se.Msg, Exit: se.Code})
	case errors.Is(err, sendmail.ErrTooLarge):
		io.Copy(io.Discard, io.LimitReader(r.Body, 64<<20))
		writeJSON(w, http.StatusRequestEntityTooLarge, apiError{Error: "the message is larger than [smtp] max_message_size: nothing was queued", Exit: sendmail.ExDataErr})
	default:
		s.log.Error("sendmail socket: a message was not queued", "uid", p.UID, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, apiError{Error: "relayd could not queue the message (" + err.Error() + "): nothing was queued, try again later", Exit: sendmail.ExTempFail})
	}
}

// ListenSendmail creates the sendmail socket at path with mode 0666:
// anyone may connect, and the daemon decides by each caller's peer
// credentials what it may do (only POST /v1/submit, under [sendmail]
// allow). A stale socket is replaced; anything else at path is refused.
func ListenSendmail(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the sendmail socket's directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	old := syscall.Umask(0o111)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("sendmail socket: %w", err)
	}
	return ln, nil
}

// ServeSendmail serves the sendmail socket ln (POST /v1/submit only)
// until Shutdown, with the status socket's limits.
func (s *Server) ServeSendmail(ln net.Listener) error {
	err := s.sendmailSrv.Serve(newLimitListener(ln, "sendmail socket", s.lim.MaxConns, s.lim.MaxConnsPerUID, s.log))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Submit hands a message to the daemon over the sendmail socket and
// returns once it is queued durably. body is read only after the daemon
// agreed to take a message from this user (Expect: 100-continue). A
// refusal is a *sendmail.Error; ErrNotRunning means no daemon answers.
func (c *Client) Submit(ctx context.Context, req *sendmail.Request, body io.Reader) (*SubmitResult, error) {
	q := url.Values{}
	if req.From != "" {
		q.Set("from", req.From)
	}
	if req.FullName != "" {
		q.Set("name", req.FullName)
	}
	if req.ExtractRecipients {
		q.Set("t", "1")
	}
	q["rcpt"] = req.Recipients
	conn, err := (&net.Dialer{}).DialContext(ctx, "unix", c.path)
	if err != nil {
		if errors.Is(err, os.ErrPermission) {
			return nil, &sendmail.Error{Code: sendmail.ExNoPerm, Msg: fmt.Sprintf("this user may not connect to the sendmail socket %s", c.path)}
		}
		return nil, fmt.Errorf("%w (no daemon answers on %s)", ErrNotRunning, c.path)
	}
	used := false
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			if used {
				return nil, errors.New("the sendmail socket's connection was used")
			}
			used = true
			return conn, nil
		},
		ExpectContinueTimeout: 30 * time.Second,
		// After the whole message went, the answer comes once it is
		// durable: within the daemon's 10-minute slow-call limit.
		ResponseHeaderTimeout: 11 * time.Minute,
		DisableKeepAlives:     true,
	}}
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://relayd/v1/submit?"+q.Encode(), io.NopCloser(body))
	if err != nil {
		conn.Close()
		return nil, err
	}
	hreq.Header.Set("Expect", "100-continue")
	hreq.Header.Set("Content-Type", "message/rfc822")
	resp, err := hc.Do(hreq)
	if err != nil {
		return nil, fmt.Errorf("handing the message to relayd over %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiError
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Exit == 0 {
			code := sendmail.ExTempFail
			if resp.StatusCode == http.StatusInternalServerError {
				code = sendmail.ExSoftware // relayd failed inside: nothing was queued
			}
			return nil, &sendmail.Error{Code: code, Msg: "relayd answered " + resp.Status + ": " + e.Error}
		}
		return nil, &sendmail.Error{Code: e.Exit, Msg: e.Error}
	}
	var res SubmitResult
	if err := json.NewDecoder(resp.Body).Decode(&res); err != nil {
		return nil, fmt.Errorf("reading relayd's answer: %w", err)
	}
	return &res, nil
}
