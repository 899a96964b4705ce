package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"

	"github.com/relayd/relayd/internal/statedir"
)

// dropToStateOwner makes this process the owner of the state directory
// when it runs as root and the directory belongs to somebody else (the
// relayd user): `relayd authorize` with no daemon running and an offline
// `relayd queue` then touch the directory with exactly the rights the
// daemon has, and nothing the service user planted there can be turned
// against root. Call it after everything that needs root (the
// configuration, secret files) has been read. Setuid applies to every
// thread of a Go program on Linux. When that user could not reach the
// directory (a directory above it is closed to it), the process stays
// root.
func dropToStateOwner(stateDir string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(stateDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // relayd makes it, as root: nothing planted yet
	} else if err != nil {
		return fmt.Errorf("state_dir %s: %w", stateDir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	uid, gid := int(st.Uid), int(st.Gid)
	groups := []int{gid}
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		if ids, err := u.GroupIds(); err == nil {
			groups = groups[:0]
			for _, id := range ids {
				if n, err := strconv.Atoi(id); err == nil {
					groups = append(groups, n)
				}
			}
		}
	}
	if !statedir.Searchable(stateDir, uint32(uid), groups) {
		// The service user could not reach the directory either; stay
		// root: package statedir follows no link in it all the same.
		return nil
	}
	if err := syscall.Setgroups(groups); err != nil {
		return fmt.Errorf("becoming state_dir's owner (uid %d): setgroups: %w", uid, err)
	}
	if err := syscall.Setgid(gid); err != nil {
		return fmt.Errorf("becoming state_dir's owner (uid %d): setgid: %w", uid, err)
	}
	if err := syscall.Setuid(uid); err != nil {
		return fmt.Errorf("becoming state_dir's owner (uid %d): setuid: %w", uid, err)
	}
	return nil
}
