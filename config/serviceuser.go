package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"

	"golang.org/x/sys/unix"

	"github.com/relayd/relayd/internal/statedir"
)

// ServiceUser is the user relayd serve runs as: the files the
// configuration names must be readable by it, whoever checks them.
type ServiceUser struct {
	Name string
	UID  int
	// GIDs are its primary and supplementary groups.
	GIDs []int
}

func (u *ServiceUser) String() string {
	if u.Name != "" {
		return fmt.Sprintf("%s (uid %d)", u.Name, u.UID)
	}
	return fmt.Sprintf("uid %d", u.UID)
}

// ServiceUserOf is who relayd runs as with state directory dir: its owner
// (the unit's User=, or whoever started relayd, which becomes it), else
// the user "relayd" when the directory is not made yet, else this
// process's user.
func ServiceUserOf(dir string) *ServiceUser {
	var st unix.Stat_t
	if dir != "" && unix.Stat(dir, &st) == nil {
		return serviceUser(strconv.Itoa(int(st.Uid)), int(st.Uid), int(st.Gid))
	}
	if u, err := LookupServiceUser("relayd"); err == nil {
		return u
	}
	return serviceUser(strconv.Itoa(os.Geteuid()), os.Geteuid(), os.Getegid())
}

// LookupServiceUser returns the user named name (or with that numeric
// id), with its groups: `check-config --as USER`.
func LookupServiceUser(name string) (*ServiceUser, error) {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr == nil {
			u, err = user.LookupId(name)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("user %q: %w", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return serviceUser(u.Uid, uid, gid), nil
}

func serviceUser(id string, uid, gid int) *ServiceUser {
	u := &ServiceUser{UID: uid, GIDs: []int{gid}}
	if pw, err := user.LookupId(id); err == nil {
		u.Name = pw.Username
		if ids, err := pw.GroupIds(); err == nil {
			u.GIDs = u.GIDs[:0]
			for _, s := range ids {
				if n, err := strconv.Atoi(s); err == nil {
					u.GIDs = append(u.GIDs, n)
				}
			}
			if len(u.GIDs) == 0 {
				u.GIDs = []int{gid}
			}
		}
	}
	return u
}

// ErrUnreadable: the service user cannot read a file the configuration
// names, though whoever checked may.
var ErrUnreadable = errors.New("the service user cannot read it")

// CheckConfigReadableBy reports a configuration file at path that svc
// cannot read: relayd serve, run as svc, could not even start.
func CheckConfigReadableBy(path string, svc *ServiceUser) error {
	return checkReadableBy("configuration file", path, svc)
}

// checkReadableBy reports, as an *Error for key, a file that svc cannot
// read by the modes of the file and the directories above it, and a file
// that does not exist (wrapping fs.ErrNotExist). nil: svc may read it,
// or this process cannot tell (it may not look into a directory on the
// way).
func checkReadableBy(key, path string, svc *ServiceUser) error {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return &Error{Key: key, Msg: fmt.Sprintf("cannot read %s: %v", path, err), Err: fs.ErrNotExist}
		}
		return nil
	}
	if statedir.Readable(path, uint32(svc.UID), svc.GIDs) {
		return nil
	}
	g := statedir.GroupName(svc.GIDs[0])
	return &Error{Key: key, Err: ErrUnreadable, Msg: fmt.Sprintf(
		"%s cannot be read by %s, who runs relayd (owner %s, mode %04o, or a directory above it is closed to that user): chgrp %s %s && chmod g+r %s, and let the user search the directories above it (root:%s 0640 is the normal layout)",
		path, svc, statedir.Owner(&st), st.Mode&0o7777, g, path, path, g)}
}
