package status

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/relayd/relayd/auth"
)

// KeyBackend is a Backend that rotates the token store's key: relayd
// rotate-key with the daemon running.
type KeyBackend interface {
	// RotateKey makes k the key grants are encrypted under and rewrites
	// every grant file under it while the old key stays accepted. Files
	// no key opens are left unchanged and listed in the result's Failed.
	RotateKey(k *auth.Key) (auth.RewriteResult, error)
}

// RotateKeyRequest carries the new key, as key_file holds it.
type RotateKeyRequest struct {
	Key string `json:"key"`
}

// handleRotateKey answers POST /v1/keys/rotate (admins only).
func (s *Server) handleRotateKey(w http.ResponseWriter, r *http.Request) {
	kb, ok := s.backend.(KeyBackend)
	if !ok {
		writeJSON(w, http.StatusNotFound, apiError{Error: "this relayd does not rotate keys"})
		return
	}
	var req RotateKeyRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 4096)).Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "the request is not JSON {key}"})
		return
	}
	k, err := auth.ParseKey([]byte(req.Key))
	if err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: err.Error()})
		return
	}
	s.slowCall(w) // fsyncs every grant file
	res, err := kb.RotateKey(k)
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, apiError{Error: err.Error()})
		return
	}
	s.log.Info("token store key rotated", "key_id", k.ID(), "rewritten", len(res.Rewritten), "failed", len(res.Failed))
	writeJSON(w, http.StatusOK, res)
}

// RotateKey asks the running daemon to rewrite every grant under k.
// ErrPermission for a caller without the admin role; ErrNotRunning when no
// daemon answers.
func (c *Client) RotateKey(ctx context.Context, k *auth.Key) (auth.RewriteResult, error) {
	var res auth.RewriteResult
	err := c.do(ctx, http.MethodPost, "/v1/keys/rotate", RotateKeyRequest{Key: k.String()}, &res)
	var nf *NotFoundError
	if errors.As(err, &nf) {
		return res, errors.New("the running daemon does not rotate keys: upgrade it, or stop it and run relayd rotate-key")
	}
	return res, err
}
