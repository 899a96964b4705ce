package queue

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/relayd/relayd/internal/statedir"
)

// FS is the file-system layer of the spool. Names are relative to the
// spool directory: "ID.spool", "ID.json", "ID.damaged", an older relayd's
// "ID.msg", or "tmp/NAME" for the directory where metadata is written
// before it is renamed into place. Tests wrap
// it (Options.WrapFS) to check the order of writes, syncs and renames and
// to fail any step.
type FS interface {
	// Create makes the new file name in the spool directory; it fails
	// when name exists.
	Create(name string) (File, error)
	// CreateTemp makes a new file in tmp/ whose name starts with prefix.
	CreateTemp(prefix string) (File, error)
	Rename(oldname, newname string) error
	Remove(name string) error
	// SyncDir fsyncs the spool directory, making renames in it durable.
	SyncDir() error
	Open(name string) (Reader, error)
	ReadFile(name string) ([]byte, error)
	// ReadDir lists "." (the spool) or "tmp".
	ReadDir(dir string) ([]os.DirEntry, error)
}

// File is a file being written. Name is relative to the spool directory.
type File interface {
	io.Writer
	io.WriterAt
	Name() string
	Sync() error
	Close() error
}

// dirFS is the real file system. Everything is opened relative to the
// spool's directory descriptors and never through a link (package
// statedir): the spool belongs to the service user, and an offline relayd
// queue command runs as root.
type dirFS struct {
	top, tmp *statedir.Dir
}

// openDirFS opens (creating) the spool directory dir and its tmp/. Files
// get the owner of dir's parent, the state directory.
func openDirFS(dir string) (*dirFS, error) {
	parent, err := statedir.Open(filepath.Dir(dir))
	if err != nil {
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	defer parent.Close()
	top, err := parent.Sub(filepath.Base(dir), true)
	if err != nil {
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	tmp, err := top.Sub("tmp", true)
	if err != nil {
		top.Close()
		return nil, fmt.Errorf("opening spool: %w", err)
	}
	return &dirFS{top: top, tmp: tmp}, nil
}

func (f *dirFS) close() {
	f.tmp.Close()
	f.top.Close()
}

// at splits a spool-relative name into its directory and base name.
func (f *dirFS) at(name string) (*statedir.Dir, string) {
	if rest, ok := strings.CutPrefix(name, "tmp/"); ok {
		return f.tmp, rest
	}
	return f.top, name
}

// Reader is a stored file opened for reading.
type Reader interface {
	io.Reader
	io.ReaderAt
	io.Closer
	Stat() (os.FileInfo, error)
}

type tmpFile struct {
	*os.File
	name string
}

func (t tmpFile) Name() string { return t.name }

func (f *dirFS) CreateTemp(prefix string) (File, error) {
	fl, err := f.tmp.CreateTemp(prefix)
	if err != nil {
		return nil, err
	}
	return tmpFile{File: fl, name: "tmp/" + filepath.Base(fl.Name())}, nil
}

func (f *dirFS) Create(name string) (File, error) {
	d, n := f.at(name)
	fl, err := d.OpenFile(n, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, err
	}
	return tmpFile{File: fl, name: name}, nil
}

func (f *dirFS) Rename(oldname, newname string) error {
	od, o := f.at(oldname)
	nd, n := f.at(newname)
	return od.Rename(o, nd, n)
}

func (f *dirFS) Remove(name string) error {
	d, n := f.at(name)
	return d.Remove(n)
}

func (f *dirFS) SyncDir() error { return f.top.Sync() }

func (f *dirFS) Open(name string) (Reader, error) {
	d, n := f.at(name)
	fl, err := d.OpenFile(n, os.O_RDONLY, 0)
	if err != nil {
		return nil, err // not a nil *os.File in an interface
	}
	return fl, nil
}

func (f *dirFS) ReadFile(name string) ([]byte, error) {
	d, n := f.at(name)
	return d.ReadFile(n)
}

func (f *dirFS) ReadDir(dir string) ([]os.DirEntry, error) {
	if dir == "tmp" {
		return f.tmp.ReadDir()
	}
	return f.top.ReadDir()
}
