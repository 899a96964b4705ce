package status

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/queue"
)

// Backend is what the status server reports on and controls.
type Backend interface {
	Status() *Status
	// InstallGrant checks g and makes it the grant of account name at once,
	// or refuses it (auth.ErrGrantRefused) and keeps the current one.
	InstallGrant(name string, g *auth.Grant) error
	// Queue is the outbound queue, for the queue admin calls.
	Queue() *queue.Queue
	// Reload reads the configuration again and applies it, or returns
	// why not (the old one stays in force).
	Reload() error
}

// Server serves the status API.
type Server struct {
	adminGID adminGroup // admin_group's id (admin.go)
	metrics  *Metrics
	backend  Backend
	log      *slog.Logger
	srv      *http.Server
	handler  http.Handler
	lim      Limits // with defaults filled in
	// sendmailSrv serves the sendmail socket: POST /v1/submit only.
	sendmailSrv     *http.Server
	sendmailHandler http.Handler
	// console is the web console, or nil when it is off (weblogin.go).
	console Console
}

// NewServer returns a status server for b; m, when not nil, is served at
// GET /metrics.
func NewServer(b Backend, log *slog.Logger, m *Metrics) *Server {
	s := &Server{backend: b, log: log, metrics: m}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", s.handleStatus)
	mux.HandleFunc("POST /v1/accounts/{name}/grant", s.adminOnly("grant handed over", s.handleGrant))
	mux.HandleFunc("POST /v1/reload", s.adminOnly("reload", s.handleReload))
	mux.HandleFunc("POST /v1/keys/rotate", s.adminOnly("rotate-key (grants rewritten under a new key)", s.handleRotateKey))
	mux.HandleFunc("POST /v1/accounts/{name}/doctor", s.adminOnly("doctor (refresh and upstream logins)", s.handleDoctor))
	if s.metrics != nil {
		mux.Handle("GET /metrics", s.metrics.Handler())
	}
	mux.HandleFunc("GET /v1/queue", s.handleQueueList)
	mux.HandleFunc("GET /v1/queue/{id}", s.handleQueueShow)
	mux.HandleFunc("GET /v1/queue/{id}/message", s.adminOnly("queue show (message content)", s.handleQueueMessage))
	mux.HandleFunc("POST /v1/queue/{op}", s.adminOnly("queue operation", s.handleQueueOp))
	mux.HandleFunc("POST /v1/queue/{id}/retry", s.adminOnly("queue retry", s.handleQueueRetry))
	mux.HandleFunc("DELETE /v1/queue/{id}", s.adminOnly("queue delete", s.handleQueueDelete))
	mux.HandleFunc("POST /v1/submit", s.handleSubmit)
	mux.HandleFunc("POST /v1/web/login", s.handleWebLogin)
	s.handler = s.recovering(mux)
	submit := http.NewServeMux()
	submit.HandleFunc("POST /v1/submit", s.handleSubmit)
	s.sendmailHandler = s.recovering(submit)
	s.SetLimits(Limits{})
	return s
}

// SetLimits bounds the socket's connections by l, whose zero fields take
// their defaults (see Limits). Call it before Serve.
func (s *Server) SetLimits(l Limits) {
	s.lim = l.withDefaults()
	s.srv = newHTTPServer(s.handler, s.lim, connContext)
	s.sendmailSrv = newHTTPServer(s.sendmailHandler, s.lim, connContext)
}

// recovering answers 500 for a request whose handler panicked, after
// logging and counting it: the socket keeps serving.
func (s *Server) recovering(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				health.Recovered(s.log, nil, "answering "+r.Method+" "+r.URL.Path+" on the status socket", v)
				writeJSON(w, http.StatusInternalServerError, apiError{Error: "internal error in relayd; the log has the details"})
			}
		}()
		h.ServeHTTP(w, r)
	})
}

// Listen creates the Unix socket at path with mode 0660, replacing a stale
// socket left by a crash. Anything else at path (a file, a symlink, a
// directory) is refused, never removed.
func Listen(path string) (net.Listener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating status socket directory: %w", err)
	}
	if err := removeStaleSocket(path); err != nil {
		return nil, err
	}
	// The socket is made 0660 by the umask as it is bound, and given its
	// group without following a link: nothing is changed by path after
	// the fact, where the directory's owner could have swapped the name
	// for a link to another file. Nothing else creates files while relayd
	// starts, so the umask is safe to change here.
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("status socket: %w", err)
	}
	// Members of group relayd may use relayd status without root.
	if g, err := user.LookupGroup("relayd"); err == nil {
		if gid, err := strconv.Atoi(g.Gid); err == nil {
			unix.Fchownat(unix.AT_FDCWD, path, -1, gid, unix.AT_SYMLINK_NOFOLLOW)
		}
	}
	return ln, nil
}

// removeStaleSocket removes the socket at path that nothing listens on; it
// refuses a socket in use and anything that is not a socket.
func removeStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("status_socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("status_socket %s is %s, not a socket: relayd removes only a stale socket there. "+
			"Set status_socket to a path of its own (default /run/relayd/status.sock), or move what is there away if it is not needed",
			path, fileKind(fi.Mode()))
	}
	if c, err := net.Dial("unix", path); err == nil {
		c.Close()
		return fmt.Errorf("status socket %s is in use: is relayd already running?", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the stale status socket %s: %w", path, err)
	}
	return nil
}

// fileKind names the type of a file of mode m, with its article.
func fileKind(m fs.FileMode) string {
	switch m.Type() {
	case 0:
		return "a regular file"
	case fs.ModeSymlink:
		return "a symbolic link"
	case fs.ModeDir:
		return "a directory"
	case fs.ModeNamedPipe:
		return "a named pipe"
	case fs.ModeDevice, fs.ModeDevice | fs.ModeCharDevice:
		return "a device"
	}
	return "a file of type " + m.Type().String()
}

// Serve serves on ln until Shutdown, closing the connections beyond the
// limits (SetLimits) as soon as they are accepted.
func (s *Server) Serve(ln net.Listener) error {
	err := s.srv.Serve(newLimitListener(ln, "status socket", s.lim.MaxConns, s.lim.MaxConnsPerUID, s.log))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops the server and the sendmail socket's, waiting for calls
// in progress until ctx ends.
func (s *Server) Shutdown(ctx context.Context) error {
	return errors.Join(s.srv.Shutdown(ctx), s.sendmailSrv.Shutdown(ctx))
}

func (s *Server) handleStatus(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.backend.Status())
}

// handleReload reloads synchronously: the answer says whether it worked.
func (s *Server) handleReload(w http.ResponseWriter, r *http.Request) {
	if err := s.backend.Reload(); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, apiError{Error: err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, struct{}{})
}

func (s *Server) handleGrant(w http.ResponseWriter, r *http.Request) {
	name := r.PathValue("name")
	var g auth.Grant
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&g); err != nil {
		writeJSON(w, http.StatusBadRequest, apiError{Error: "malformed grant: " + err.Error()})
		return
	}
	s.slowCall(w) // InstallGrant refreshes a token with the grant
	if err := s.backend.InstallGrant(name, &g); err != nil {
		status := http.StatusInternalServerError
		code := ""
		switch {
		case errors.Is(err, ErrUnknownAccount):
			status, code = http.StatusNotFound, codeUnknownAccount
		case errors.Is(err, auth.ErrGrantRefused):
			status = http.StatusUnprocessableEntity
		}
		writeJSON(w, status, apiError{Error: err.Error(), Code: code})
		return
	}
	s.log.Info("grant handed over by 'relayd authorize'", "account", name)
	writeJSON(w, http.StatusOK, struct{}{})
}

// handleQueueList streams the queue as JSON, or as the text of relayd
// queue list with ?format=text.
func (s *Server) handleQueueList(w http.ResponseWriter, r *http.Request) {
	format := r.URL.Query().Get("format")
	if format == "text" {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	} else {
		format = "json"
		w.Header().Set("Content-Type", "application/json")
	}
	queue.WriteList(w, s.backend.Queue().List(), format, time.Now())
}

func (s *Server) handleQueueShow(w http.ResponseWriter, r *http.Request) {
	e, err := s.backend.Queue().Get(r.PathValue("id"))
	if err != nil {
		queueError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, e)
}

func (s *Server) handleQueueMessage(w http.ResponseWriter, r *http.Request) {
	s.slowCall(w) // a message may be large
	m, err := s.backend.Queue().Message(r.PathValue("id"))
	if err != nil {
		queueError(w, err)
		return
	}
	defer m.Close()
	w.Header().Set("Content-Type", "message/rfc822")
	io.Copy(w, m)
}

// QueueResult answers the queue operations.
type QueueResult struct {
	Count int `json:"count"`
	// Holds say what still keeps the mail concerned from going out, and
	// what releases it, after a flush, release or retry (none for hold
	// and delete).
	Holds []queue.Hold `json:"holds,omitempty"`
}

func (s *Server) handleQueueOp(w http.ResponseWriter, r *http.Request) {
	q, target := s.backend.Queue(), r.URL.Query().Get("target")
	var n int
	var err error
	n, err = q.Apply(queue.Op(r.PathValue("op")), target)
	if errors.Is(err, queue.ErrUnknownOp) {
		writeJSON(w, http.StatusNotFound, apiError{Error: err.Error()})
		return
	}
	if err != nil {
		queueError(w, err)
		return
	}
	s.log.Info("queue operation", "op", r.PathValue("op"), "target", target, "count", n)
	res := QueueResult{Count: n}
	if queue.Op(r.PathValue("op")) != queue.OpHold {
		res.Holds = q.Holds(target)
	}
	writeJSON(w, http.StatusOK, res)
}

func (s *Server) handleQueueRetry(w http.ResponseWriter, r *http.Request) {
	q, id := s.backend.Queue(), r.PathValue("id")
	if err := q.Retry(id); err != nil {
		queueError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, QueueResult{Count: 1, Holds: q.Holds(id)})
}

func (s *Server) handleQueueDelete(w http.ResponseWriter, r *http.Request) {
	if err := s.backend.Queue().Delete(r.PathValue("id")); err != nil {
		queueError(w, err)
		return
	}
	s.log.Info("queue operation", "op", "delete", "id", r.PathValue("id"))
	writeJSON(w, http.StatusOK, QueueResult{Count: 1})
}

func queueError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, queue.ErrNotFound) {
		status = http.StatusNotFound
	} else if errors.As(err, new(queue.ErrBusyError)) {
		status = http.StatusConflict
	}
	writeJSON(w, status, apiError{Error: err.Error()})
}

// ErrUnknownAccount is returned for an account name the daemon does not
// have.
var ErrUnknownAccount = errors.New("unknown account")

type apiError struct {
	Error string `json:"error"`
	// Code classifies the error for the client; empty for most.
	Code string `json:"code,omitempty"`
	// Exit is the exit status relayd sendmail exits with (sysexits.h);
	// only POST /v1/submit sets it.
	Exit int `json:"exit,omitempty"`
}

// codeUnknownAccount marks an answer about an account the daemon does not
// have.
const (
	codeUnknownAccount = "unknown_account"
	codePermission     = "permission"
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
