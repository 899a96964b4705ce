package status

import (
	"context"
	"fmt"
	"net/http"
	"time"
)

// Console is the web console, when [web] listen is set: the status
// socket hands out its one-time sign-in links (relayd web-login).
type Console interface {
	// IssueLink returns a one-time link that starts a console session,
	// an admin's when admin is true, else a read-only one; origin names
	// who asked, for the audit log of the session's changes.
	IssueLink(admin bool, origin string) (link string, expires time.Time)
	// LoopbackOnly reports whether the console listens on loopback only.
	LoopbackOnly() bool
	// Addr is [web] listen.
	Addr() string
}

// SetConsole makes c the console whose links POST /v1/web/login hands
// out (nil: none, the console is off). Call it before Serve.
func (s *Server) SetConsole(c Console) { s.console = c }

// WebLogin answers POST /v1/web/login: a one-time link to the web
// console, with the caller's role.
type WebLogin struct {
	URL     string    `json:"url"`
	Expires time.Time `json:"expires"`
	// Role is "admin" or "read-only".
	Role string `json:"role"`
	// Listen is [web] listen; LoopbackOnly says whether that is on this
	// machine only (reach it through ssh -L).
	Listen       string `json:"listen"`
	LoopbackOnly bool   `json:"loopback_only"`
}

// codeConsoleOff marks the answer when the web console is off.
const codeConsoleOff = "console_off"

// handleWebLogin issues a console link to any caller of the socket: the
// link's role is the caller's, read-only unless it may change things
// here. The link itself is never logged.
func (s *Server) handleWebLogin(w http.ResponseWriter, r *http.Request) {
	if s.console == nil {
		writeJSON(w, http.StatusNotFound, apiError{Code: codeConsoleOff,
			Error: "the web console is off: set [web] listen (for example \"127.0.0.1:8025\") in the configuration and restart relayd"})
		return
	}
	p, _ := r.Context().Value(peerKey{}).(*Peer)
	if p == nil {
		writeJSON(w, http.StatusForbidden, apiError{Error: "relayd could not tell who is calling (no peer credentials)", Code: codePermission})
		return
	}
	admin := p.admin(s.adminGID.get())
	origin := fmt.Sprintf("relayd web-login by uid %d (pid %d, %s)", p.UID, p.PID, p.Comm)
	link, expires := s.console.IssueLink(admin, origin)
	role := "read-only"
	if admin {
		role = "admin"
	}
	s.log.Info("status socket: web console link issued", "uid", p.UID, "pid", p.PID, "command", p.Comm, "role", role)
	writeJSON(w, http.StatusOK, WebLogin{URL: link, Expires: expires, Role: role,
		Listen: s.console.Addr(), LoopbackOnly: s.console.LoopbackOnly()})
}

// ErrConsoleOff means the daemon serves no web console.
var ErrConsoleOff = fmt.Errorf("the web console is off")

// WebLogin asks the daemon for a one-time link to the web console.
func (c *Client) WebLogin(ctx context.Context) (*WebLogin, error) {
	var out WebLogin
	if err := c.do(ctx, http.MethodPost, "/v1/web/login", struct{}{}, &out); err != nil {
		return nil, err
	}
	return &out, nil
}
