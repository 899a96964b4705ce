// Package statedir opens files under relayd's state directory without
// following anything a less privileged user may have planted there.
//
// The state directory belongs to the service user (relayd), but some
// commands run as root: `relayd authorize` with no daemon running, an
// offline `relayd queue ...`, or `serve` started by hand. Whoever owns the
// directory can replace any name in it with a symbolic link, a hard link or
// a FIFO, so root must never resolve a path below it. Every file and
// directory is therefore opened relative to an open directory descriptor
// with O_NOFOLLOW (openat(2)), new files with O_CREAT|O_EXCL, directories
// with O_DIRECTORY; a link, a file of the wrong type or a file with more
// than one name is refused with an error that names the path; and
// ownership is changed with fchown(2) on the open descriptor, never by path.
//
// The directory itself is named by the configuration (state_dir), which
// only root writes; CheckPerms refuses one that others can write to, as
// OpenSSH's StrictModes does.
package statedir

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// Dir is an open directory. Its methods take names of entries directly in
// it (no slashes). A Dir is safe for use from any goroutine; Close it when
// done.
type Dir struct {
	f    *os.File
	path string
	// owner, when not nil, is the uid and gid that files and directories
	// this process creates get: the state directory's owner, when root
	// works in a directory that belongs to somebody else.
	owner *[2]int
}

// Open opens the directory at path, creating it (mode 0700) when it does
// not exist. path itself comes from the configuration (state_dir, which
// only root writes) and is resolved as usual, links and all: CheckPerms
// makes sure that nobody but root and its owner can change the way there.
// Below it nothing is followed.
func Open(path string) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", path, err)
	}
	return open(path)
}

// OpenExisting is Open without creating the directory: it returns an error
// satisfying errors.Is(err, fs.ErrNotExist) when there is none.
func OpenExisting(path string) (*Dir, error) { return open(path) }

func open(path string) (*Dir, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: path, Err: err}
	}
	d := &Dir{f: os.NewFile(uintptr(fd), path), path: path}
	if os.Geteuid() == 0 {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			d.Close()
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if st.Uid != 0 {
			d.owner = &[2]int{int(st.Uid), int(st.Gid)}
		}
	}
	return d, nil
}

// Path is the directory's path, for messages.
func (d *Dir) Path() string { return d.path }

// Join is the path of name in d, for messages.
func (d *Dir) Join(name string) string { return filepath.Join(d.path, name) }

// Close closes the directory's descriptor.
func (d *Dir) Close() error { return d.f.Close() }

func (d *Dir) fd() int { return int(d.f.Fd()) }

// MountID identifies the mount d is on: a new number each time a file
// system is mounted, even the same one again (statx(2), STATX_MNT_ID).
func (d *Dir) MountID() (uint64, error) {
	var st unix.Statx_t
	if err := unix.Statx(d.fd(), "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &st); err != nil {
		return 0, &os.PathError{Op: "statx", Path: d.path, Err: err}
	}
	if st.Mask&unix.STATX_MNT_ID == 0 {
		return 0, &os.PathError{Op: "statx", Path: d.path, Err: errors.ErrUnsupported}
	}
	return st.Mnt_id, nil
}

func checkName(name string) error {
	if name == "" || name == "." || name == ".." || strings.ContainsRune(name, '/') || strings.ContainsRune(name, 0) {
		return fmt.Errorf("%q is not a file name", name)
	}
	return nil
}

// Sub opens the directory name in d, creating it (mode 0700, owned like d)
// when create is set and it does not exist. A symbolic link or anything
// that is not a directory is refused.
func (d *Dir) Sub(name string, create bool) (*Dir, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	path := d.Join(name)
	if create {
		if err := unix.Mkdirat(d.fd(), name, 0o700); err != nil && err != unix.EEXIST {
			return nil, fmt.Errorf("creating %s: %w", path, err)
		}
	}
	fd, err := unix.Openat(d.fd(), name, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, refusal(path, "directory", err)
	}
	sub := &Dir{f: os.NewFile(uintptr(fd), path), path: path, owner: d.owner}
	if err := sub.own(fd); err != nil {
		sub.Close()
		return nil, err
	}
	return sub, nil
}

// own gives the descriptor d's owner when this process changes ownership
// and it is not theirs yet.
func (d *Dir) own(fd int) error {
	if d.owner == nil {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return err
	}
	return d.ownStat(fd, &st)
}

// ownStat is own with the descriptor's stat already taken.
func (d *Dir) ownStat(fd int, st *unix.Stat_t) error {
	if d.owner == nil {
		return nil
	}
	if int(st.Uid) == d.owner[0] && int(st.Gid) == d.owner[1] {
		return nil
	}
	if err := unix.Fchown(fd, d.owner[0], d.owner[1]); err != nil {
		return fmt.Errorf("giving %s to uid %d: %w", d.path, d.owner[0], err)
	}
	return nil
}

// OpenFile opens the regular file name in d with flag (os.O_RDONLY,
// os.O_CREATE|os.O_RDWR, …) and perm. It never follows a symbolic link
// and refuses a FIFO, a device, a directory or a file with more than one
// name (a hard link to a file elsewhere). A file this process creates, or
// one root finds owned by somebody other than d's owner, is given d's
// owner through its descriptor.
func (d *Dir) OpenFile(name string, flag int, perm os.FileMode) (*os.File, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	path := d.Join(name)
	// O_NONBLOCK: opening a planted FIFO must not hang; it is refused
	// below and cleared for the regular file that remains. A file made
	// new here (O_CREAT|O_EXCL: the spool's hot path) can be nothing
	// planted.
	fresh := flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL
	nonblock := unix.O_NONBLOCK
	if fresh {
		nonblock = 0
	}
	fd, err := unix.Openat(d.fd(), name, flag|unix.O_NOFOLLOW|unix.O_CLOEXEC|nonblock, uint32(perm.Perm()))
	if err != nil {
		return nil, refusal(path, "file", err)
	}
	if err := d.checkFile(fd, path); err != nil {
		unix.Close(fd)
		return nil, err
	}
	if !fresh {
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return nil, fmt.Errorf("%s: %w", path, err)
		}
	}
	return os.NewFile(uintptr(fd), path), nil
}

func (d *Dir) checkFile(fd int, path string) error {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%s is not a regular file: relayd refuses to use it; remove it (relayd makes a new one)", path)
	}
	if st.Nlink > 1 {
		return fmt.Errorf("%s has %d names (a hard link): relayd refuses to use it; remove it (relayd makes a new one)", path, st.Nlink)
	}
	return d.ownStat(fd, &st)
}

// CreateTemp creates a new file in d whose name starts with prefix,
// exclusively (O_CREAT|O_EXCL, so nothing planted at the name is
// followed), mode 0600, owned like d.
func (d *Dir) CreateTemp(prefix string) (*os.File, error) {
	var b [8]byte
	for range 100 {
		rand.Read(b[:])
		f, err := d.OpenFile(prefix+hex.EncodeToString(b[:]), os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
		if errors.Is(err, os.ErrExist) {
			continue
		}
		return f, err
	}
	return nil, fmt.Errorf("creating a temporary file in %s: too many name collisions", d.path)
}

// ReadFile reads the regular file name in d.
func (d *Dir) ReadFile(name string) ([]byte, error) {
	f, err := d.OpenFile(name, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// Rename renames oldname in d to newname in to (which may be d). A link
// at newname is replaced, never followed.
func (d *Dir) Rename(oldname string, to *Dir, newname string) error {
	if err := checkName(oldname); err != nil {
		return err
	}
	if err := checkName(newname); err != nil {
		return err
	}
	if err := unix.Renameat(d.fd(), oldname, to.fd(), newname); err != nil {
		return &os.LinkError{Op: "rename", Old: d.Join(oldname), New: to.Join(newname), Err: err}
	}
	return nil
}

// Remove removes the entry name (a file or a link, never what a link
// points to) from d.
func (d *Dir) Remove(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if err := unix.Unlinkat(d.fd(), name, 0); err != nil {
		return &os.PathError{Op: "remove", Path: d.Join(name), Err: err}
	}
	return nil
}

// ReadDir lists d's entries.
func (d *Dir) ReadDir() ([]os.DirEntry, error) {
	fd, err := unix.Openat(d.fd(), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: d.path, Err: err}
	}
	f := os.NewFile(uintptr(fd), d.path)
	defer f.Close()
	return f.ReadDir(-1)
}

// Removed reports whether the directory was deleted since it was opened
// (it has no links left): whatever is made in it is lost.
func (d *Dir) Removed() bool {
	var st unix.Stat_t
	return unix.Fstat(d.fd(), &st) == nil && st.Nlink == 0
}

// Sync fsyncs the directory, making renames and removals in it durable.
func (d *Dir) Sync() error {
	if err := d.f.Sync(); err != nil {
		return fmt.Errorf("syncing %s: %w", d.path, err)
	}
	return nil
}

// refusal turns an open error into one that says what to do when the
// entry is a link or of the wrong type.
func refusal(path, want string, err error) error {
	switch {
	case errors.Is(err, unix.ELOOP):
		return fmt.Errorf("%s is a symbolic link: relayd does not follow links in its state directory; remove it (relayd makes a new %s): %w", path, want, syscall.ELOOP)
	case errors.Is(err, unix.ENOTDIR) && want == "directory":
		return fmt.Errorf("%s is not a directory: move it aside (relayd makes a new one): %w", path, syscall.ENOTDIR)
	case errors.Is(err, unix.EISDIR) && want == "file":
		return fmt.Errorf("%s is a directory, not a file: move it aside (relayd makes a new file): %w", path, syscall.EISDIR)
	}
	return &os.PathError{Op: "open", Path: path, Err: err}
}

// CheckPerms refuses a state directory that somebody other than its owner
// and root can change, as OpenSSH's StrictModes does for ~/.ssh: path (when
// it exists) and every directory above it must not be writable by group
// or others, and must belong to root or to this process's user. The one
// exception is a root-owned directory with the sticky bit (/tmp), in which
// nobody can rename or remove what others own. The error names the
// directory and the chmod that fixes it.
func CheckPerms(path string) error {
	abs, err := filepath.Abs(path)
	if err != nil {
		return err
	}
	// state_dir may be a link (to another disk, say): the way to where
	// it leads must be as safe as the way to the link.
	if real, err := filepath.EvalSymlinks(abs); err == nil && real != abs {
		if err := checkChain(real); err != nil {
			return err
		}
	}
	return checkChain(abs)
}

// checkChain checks abs, a state directory, and the directories above it.
func checkChain(abs string) error {
	euid := uint32(os.Geteuid())
	for p := abs; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		err := unix.Stat(p, &st)
		switch {
		case err == nil:
			if err := checkDirPerms(p, &st, p == abs, euid); err != nil {
				return err
			}
		case errors.Is(err, unix.ENOENT):
			// Not made yet: relayd makes what is missing, mode 0700.
		default:
			return fmt.Errorf("checking %s: %w", p, err)
		}
		if p == filepath.Dir(p) {
			return nil
		}
	}
}

func checkDirPerms(p string, st *unix.Stat_t, stateDir bool, euid uint32) error {
	what := "the directory above state_dir"
	if stateDir {
		what = "state_dir"
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return fmt.Errorf("%s %s is not a directory", what, p)
	}
	mode := st.Mode & 0o7777
	sticky := mode&unix.S_ISVTX != 0 && st.Uid == 0
	if mode&0o022 != 0 && (stateDir || !sticky) {
		return fmt.Errorf("%s %s is writable by its group or by others (mode %04o), so another user could plant links relayd would follow as root: run 'chmod go-w %s'", what, p, mode, p)
	}
	if !stateDir && st.Uid != 0 && st.Uid != euid {
		return fmt.Errorf("%s %s belongs to uid %d, who could replace state_dir: give it to root ('chown root %s')", what, p, st.Uid, p)
	}
	return nil
}

// Searchable reports whether uid, in groups, may search every directory
// on the way to dir (and dir itself), by the directories' modes: whether
// that user could reach a file in dir. Root may search anything.
func Searchable(dir string, uid uint32, groups []int) bool {
	if uid == 0 {
		return true
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	for p := abs; ; p = filepath.Dir(p) {
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return false
		}
		if !Permits(&st, uid, groups, 1) {
			return false
		}
		if p == filepath.Dir(p) {
			return true
		}
	}
}

// Permits reports whether the mode of st lets uid, in groups, do what
// bit asks (4 read, 2 write, 1 execute or search), as the kernel decides
// for a user who is not root: by the owner's bits when uid owns it, else
// the group's when one of groups is its group, else the others' bits.
func Permits(st *unix.Stat_t, uid uint32, groups []int, bit uint32) bool {
	if uid == 0 {
		return true
	}
	switch {
	case st.Uid == uid:
		bit <<= 6
	case slices.Contains(groups, int(st.Gid)):
		bit <<= 3
	}
	return st.Mode&bit != 0
}

// Readable reports whether uid, in groups, may read the file at path by
// the modes of the file and of every directory on the way to it (as
// Searchable and Permits decide): whether the service user could read a
// file this process may be able to read only because it is root. A path
// this process cannot stat is not readable.
func Readable(path string, uid uint32, groups []int) bool {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return false
	}
	return Searchable(filepath.Dir(path), uid, groups) && Permits(&st, uid, groups, 4)
}

// Owner is "user:group" of st, by name when known, for messages that say
// who owns a file.
func Owner(st *unix.Stat_t) string {
	u := strconv.Itoa(int(st.Uid))
	if pw, err := user.LookupId(u); err == nil {
		u = pw.Username
	}
	return u + ":" + GroupName(int(st.Gid))
}

// GroupName names gid, for a chgrp command; its number when it has no
// name.
func GroupName(gid int) string {
	if g, err := user.LookupGroupId(strconv.Itoa(gid)); err == nil {
		return g.Name
	}
	return strconv.Itoa(gid)
}
