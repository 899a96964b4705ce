package status

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Who may do what on the status socket. Anyone who can connect (mode 0660,
// group relayd) may read: status, metrics, the queue's list and a
// message's metadata. Reading a message's content or changing anything
// (queue operations, grants, reload) needs root, the daemon's own user, or
// a member of the admin group; each such call is logged with the caller.

// Peer is the process at the other end of a status-socket connection, as
// the kernel recorded it when that process connected (SO_PEERCRED,
// SO_PEERGROUPS). relayd reads it once, at accept, and binds it to the
// connection: what the process (or whoever holds its PID later) does
// afterwards changes nothing.
type Peer struct {
	UID, GID int
	Groups   []int // supplementary groups
	PID      int
	Comm     string // its command name as of accept, for the audit line only
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
	var groups []int
	cerr := rc.Control(func(fd uintptr) {
		if cred, err = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED); err == nil {
			// Without them (a kernel before 4.13), only the uid and the
			// primary group count.
			groups, _ = peerGroups(int(fd))
		}
	})
	if cerr != nil || err != nil || cred == nil {
		return nil
	}
	p := &Peer{UID: int(cred.Uid), GID: int(cred.Gid), Groups: groups, PID: int(cred.Pid)}
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p.PID)); err == nil {
		p.Comm = strings.TrimSpace(string(b))
	}
	return p
}

// peerGroups returns the supplementary groups of the peer of the Unix
// socket fd (SO_PEERGROUPS, Linux 4.13), which x/sys/unix has no helper
// for: the kernel answers ERANGE with the size it needs.
func peerGroups(fd int) ([]int, error) {
	buf := make([]uint32, 32)
	for {
		size := uint32(len(buf) * 4)
		_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_PEERGROUPS,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		switch {
		case errno == unix.ERANGE && int(size) > len(buf)*4:
			buf = make([]uint32, (size+3)/4)
			continue
		case errno != 0:
			return nil, fmt.Errorf("reading the peer's groups (SO_PEERGROUPS): %w", errno)
		}
		groups := make([]int, size/4)
		for i := range groups {
			groups[i] = int(buf[i])
		}
		return groups, nil
	}
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
	return slices.Contains(p.Groups, adminGID)
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
