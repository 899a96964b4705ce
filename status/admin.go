package status

import (
	"sync/atomic"

	"github.com/relayd/relayd/config"
)

// adminGroup is admin_group's id. Its zero value means none. Safe from
// any goroutine: a reload changes it while calls are answered.
type adminGroup struct {
	gid1 atomic.Int64 // the gid plus one, so that zero is none
}

// get returns the gid, or -1 for none.
func (g *adminGroup) get() int { return int(g.gid1.Load()) - 1 }

func (g *adminGroup) set(gid int) {
	if gid < 0 {
		gid = -1
	}
	g.gid1.Store(int64(gid) + 1)
}

// SetAdminGroup names the group whose members may change things (besides
// root and relayd's own user); "" means none. An unknown group is an
// error, and the admin group in force stays. Safe from any goroutine.
func (s *Server) SetAdminGroup(name string) error {
	gid, err := config.LookupGroup(name)
	if err != nil {
		return err
	}
	s.SetAdminGID(gid)
	return nil
}

// SetAdminGID makes gid (-1: none) the admin group for the calls that
// arrive from now on. Safe from any goroutine.
func (s *Server) SetAdminGID(gid int) { s.adminGID.set(gid) }
