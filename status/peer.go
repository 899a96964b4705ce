package status

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Who may do what on the status socket. Anyone who can connect (mode 0660,
// group relayd) may read: status, metrics, the queue's list and a
// message's metadata. Reading a message's content or changing anything
// (queue operations, grants, reload) needs root, the daemon's own user, or
// a member of the admin group; each such call is logged with the caller.

// Peer is the process at the other end of a status-socket connection, from
// SO_PEERCRED.
type Peer struct {
	UID, GID int
	PID      int
	Comm     string // its command name, for the audit line
}

type peerKey struct{}

// peerOf reads the peer credentials of a Unix connection.
func peerOf(c net.Conn) *Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil
	}
	rc, err := uc.SyscallConn()
	if err != nil {
		return nil
	}
	var cred *unix.Ucred
	rc.Control(func(fd uintptr) { cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED) })
	if err != nil || cred == nil {
		return nil
	}
	p := &Peer{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID)); err == nil {
		p.Comm = strings.TrimSpace(string(b))
	}
	return p
}

// groups are the peer's supplementary groups (SO_PEERCRED gives only the
// primary one), from /proc.
func (p *Peer) groups() []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.PID))
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "Groups:"); ok {
			var gs []int
			for _, f := range strings.Fields(rest) {
				if g, err := strconv.Atoi(f); err == nil {
					gs = append(gs, g)
				}
			}
			return gs
		}
	}
	return nil
}

// admin reports whether p may change things: root, the daemon's own user,
// or a member of adminGID (-1: none).
func (p *Peer) admin(adminGID int) bool {
	if p.UID == 0 || p.UID == os.Getuid() {
		return true
	}
	if adminGID < 0 {
		return false
	}
	if p.GID == adminGID {
		return true
	}
	for _, g := range p.groups() {
		if g == adminGID {
			return true
		}
	}
	return false
}

// errPermission is the text of a refusal for lack of permission.
const errPermission = "permission denied: this needs root, relayd's own user, or membership of admin_group"

// adminOnly wraps a handler that reads message content or changes state:
// it refuses callers who are not admins and logs the others' calls.
func (s *Server) adminOnly(what string, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p, _ := r.Context().Value(peerKey{}).(*Peer)
		if p == nil || !p.admin(s.adminGID.get()) {
			uid := -1
			if p != nil {
				uid = p.UID
			}
			s.log.Warn("status socket: refused a call that needs an admin", "call", what, "uid", uid)
			writeJSON(w, http.StatusForbidden, apiError{Error: errPermission, Code: codePermission})
			return
		}
		s.log.Info("status socket: "+what, "uid", p.UID, "pid", p.PID, "command", p.Comm, "path", r.URL.Path,
			"target", r.URL.Query().Get("target"))
		h(w, r)
	}
}

// connContext records each connection's peer, taken at accept
// (limitListener), in its requests' context.
func connContext(ctx context.Context, c net.Conn) context.Context {
	var p *Peer
	if lc, ok := c.(*limitedConn); ok {
		p = lc.peer
	} else {
		p = peerOf(c)
	}
	if p != nil {
		return context.WithValue(ctx, peerKey{}, p)
	}
	return ctx
}
