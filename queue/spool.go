package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/relayd/relayd/internal/fault"
)

// Spool stores queued messages durably; see the package documentation for
// the layout. Its methods are safe for use from any goroutine.
type Spool struct {
	dir  string // for messages
	fs   FS
	real *dirFS

	smu     sync.Mutex
	pending *syncBatch // renames waiting for the next directory fsync
	syncing bool
}

type syncBatch struct {
	done chan struct{}
	err  error
}

// OpenSpool opens (creating) the spool in dir. wrap, when not nil, wraps
// the file system the spool uses (tests inject faults with it).
func OpenSpool(dir string, wrap func(FS) FS) (*Spool, error) {
	real, err := openDirFS(dir)
	if err != nil {
		return nil, err
	}
	var fs FS = real
	if wrap != nil {
		fs = wrap(real)
	}
	return &Spool{dir: dir, fs: fs, real: real}, nil
}

// Close closes the spool's directories.
func (s *Spool) Close() { s.real.close() }

func msgName(id string) string  { return id + ".msg" }
func metaName(id string) string { return id + ".json" }

// writeTemp writes r to a new file in tmp/ and fsyncs it.
func (s *Spool) writeTemp(prefix string, r io.Reader) (name string, n int64, err error) {
	f, n, err := s.createTemp(prefix, r)
	if err != nil {
		return "", 0, err
	}
	return f.Name(), n, s.closeTemp(f, f.Sync())
}

// createTemp writes r to a new file in tmp/, not yet synced; the caller
// syncs and closes it (closeTemp).
func (s *Spool) createTemp(prefix string, r io.Reader) (File, int64, error) {
	f, err := s.fs.CreateTemp(prefix)
	if err != nil {
		return nil, 0, err
	}
	n, err := copyPooled(f, r)
	if err != nil {
		f.Close()
		s.fs.Remove(f.Name())
		return nil, 0, err
	}
	return f, n, nil
}

// closeTemp closes f, a file createTemp made, and removes it when err (its
// sync's) or the close failed.
func (s *Spool) closeTemp(f File, err error) error {
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.fs.Remove(f.Name())
	}
	return err
}

// copyBufs are createTemp's copy buffers: io.Copy would allocate 32 KiB
// per message (in io.MultiReader's WriteTo, then in os.File's ReadFrom),
// whose collection costs more CPU than the copy at a thousand messages a
// second.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// copyPooled copies r to w with a pooled buffer.
func copyPooled(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	// Hidden WriterTo and ReaderFrom, which would take buffers of their own.
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, *bp)
}

// Put stores a new message: body and e's metadata (with e.Size set) are
// written and fsynced, then renamed into place, then the directory fsynced.
// When Put returns nil the message survives a crash; when it returns an
// error nothing of it remains.
func (s *Spool) Put(e *Entry, body io.Reader) error {
	err := s.put(e, body)
	if err != nil && (s.real.top.Removed() || s.real.tmp.Removed()) {
		return fmt.Errorf("%w: %s was deleted while relayd runs; restart relayd to make it again (the mail that was in it is gone): %v",
			ErrSpoolRemoved, s.dir, err)
	}
	return err
}

// ErrSpoolRemoved means the spool directory was deleted under the running
// relayd: nothing can be queued until a restart makes it again.
var ErrSpoolRemoved = errors.New("spool directory removed")

func (s *Spool) put(e *Entry, body io.Reader) error {
	msg, n, err := s.createTemp(e.ID+".msg.", body)
	if err != nil {
		return fmt.Errorf("writing message: %w", err)
	}
	e.Size = n
	b, err := json.Marshal(e)
	if err != nil {
		s.closeTemp(msg, err)
		return err
	}
	meta, _, err := s.createTemp(e.ID+".json.", bytes.NewReader(b))
	if err != nil {
		s.closeTemp(msg, err)
		return fmt.Errorf("writing metadata: %w", err)
	}
	// Both files are synced at once: the file system commits them in one
	// journal transaction where one after the other took two, and a
	// transaction's commit is most of what a message costs on a disk
	// whose fsync is fast.
	metaSynced := make(chan error, 1)
	go func() { metaSynced <- meta.Sync() }()
	msgErr := s.closeTemp(msg, msg.Sync())
	metaErr := s.closeTemp(meta, <-metaSynced)
	switch { // closeTemp removed the file that failed
	case msgErr != nil:
		if metaErr == nil {
			s.fs.Remove(meta.Name())
		}
		return fmt.Errorf("writing message: %w", msgErr)
	case metaErr != nil:
		s.fs.Remove(msg.Name())
		return fmt.Errorf("writing metadata: %w", metaErr)
	}
	fault.Hit("after-temp-write")
	if err := s.fs.Rename(msg.Name(), msgName(e.ID)); err != nil {
		s.fs.Remove(msg.Name())
		s.fs.Remove(meta.Name())
		return fmt.Errorf("writing message: %w", err)
	}
	if err := s.fs.Rename(meta.Name(), metaName(e.ID)); err != nil {
		s.fs.Remove(meta.Name())
		s.fs.Remove(msgName(e.ID))
		return fmt.Errorf("writing metadata: %w", err)
	}
	fault.Hit("after-rename")
	if err := s.syncDir(); err != nil {
		s.fs.Remove(metaName(e.ID))
		s.fs.Remove(msgName(e.ID))
		return fmt.Errorf("syncing spool directory: %w", err)
	}
	return nil
}

// Update rewrites e's metadata durably.
func (s *Spool) Update(e *Entry) error {
	return s.writeMeta(e)
}

// writeMeta writes e's metadata durably: written, fsynced, renamed into
// place, the directory fsynced.
func (s *Spool) writeMeta(e *Entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	tmp, _, err := s.writeTemp(e.ID+".json.", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("writing metadata: %w", err)
	}
	if err := s.fs.Rename(tmp, metaName(e.ID)); err != nil {
		s.fs.Remove(tmp)
		return fmt.Errorf("writing metadata: %w", err)
	}
	return s.syncDir()
}

// syncDir fsyncs the spool directory. Callers that arrive while an fsync
// runs share the next one (group commit): every rename made before a call
// is durable when it returns.
func (s *Spool) syncDir() error {
	s.smu.Lock()
	if s.pending == nil {
		s.pending = &syncBatch{done: make(chan struct{})}
	}
	b := s.pending
	if !s.syncing {
		s.syncing = true
		go s.syncLoop()
	}
	s.smu.Unlock()
	<-b.done
	return b.err
}

func (s *Spool) syncLoop() {
	for {
		s.smu.Lock()
		b := s.pending
		s.pending = nil
		if b == nil {
			s.syncing = false
			s.smu.Unlock()
			return
		}
		s.smu.Unlock()
		b.err = s.fs.SyncDir()
		close(b.done)
	}
}

// Remove deletes a message: metadata first, so that a crash in between
// leaves a lone message file, which recovery removes.
func (s *Spool) Remove(id string) error {
	if err := s.fs.Remove(metaName(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if err := s.fs.Remove(msgName(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

// Open returns the stored message.
func (s *Spool) Open(id string) (io.ReadCloser, error) {
	return s.fs.Open(msgName(id))
}

// Recover returns every complete entry and deletes the remains of
// submissions that were never acknowledged.
func (s *Spool) Recover() ([]*Entry, error) {
	if des, err := s.fs.ReadDir("tmp"); err == nil {
		for _, de := range des {
			s.fs.Remove("tmp/" + de.Name())
		}
	}
	des, err := s.fs.ReadDir(".")
	if err != nil {
		return nil, fmt.Errorf("reading spool: %w", err)
	}
	msgs := map[string]bool{}
	metas := map[string]bool{}
	for _, de := range des {
		name := de.Name()
		if id, ok := strings.CutSuffix(name, ".msg"); ok {
			msgs[id] = true
		} else if id, ok := strings.CutSuffix(name, ".json"); ok {
			metas[id] = true
		}
	}
	var entries []*Entry
	for id := range metas {
		if !msgs[id] {
			s.fs.Remove(metaName(id))
			continue
		}
		b, err := s.fs.ReadFile(metaName(id))
		if err != nil {
			return nil, fmt.Errorf("reading spool entry %s: %w", id, err)
		}
		var e Entry
		if err := json.Unmarshal(b, &e); err != nil || e.ID != id {
			return nil, fmt.Errorf("spool entry %s is corrupt (%v): move %s and %s aside and restart", id, err, filepath.Join(s.dir, metaName(id)), filepath.Join(s.dir, msgName(id)))
		}
		e.upgrade()
		entries = append(entries, &e)
	}
	for id := range msgs {
		if !metas[id] {
			s.fs.Remove(msgName(id))
		}
	}
	return entries, nil
}

// heldFile lists the accounts an admin held (relayd queue hold ACCOUNT), so
// that the hold survives a restart.
const heldFile = "held-accounts.list" // not .json: that suffix is a message's metadata

// holdsFile records when each account's hold for its condition began, so
// that time held before a restart is not counted in messages' lifetimes
// after it.
const holdsFile = "condition-holds.list"

// rewriteFile lists the accounts whose fallback mailbox was refused
// sending as them (SendAsDenied with fallback_from = "keep"): their mail
// goes through the fallback with a rewritten From until they are
// reauthorized, across restarts.
const rewriteFile = "fallback-rewrite.list"

// SaveForcedRewrites stores durably the accounts whose fallback must
// rewrite From.
func (s *Spool) SaveForcedRewrites(names []string) error {
	return s.saveRecord(rewriteFile, names, "fallback rewrites")
}

// ForcedRewrites returns the accounts whose fallback must rewrite From.
func (s *Spool) ForcedRewrites() ([]string, error) {
	var names []string
	return names, s.loadRecord(rewriteFile, &names)
}

// SaveHeldAccounts stores the admin-held accounts durably.
func (s *Spool) SaveHeldAccounts(names []string) error {
	return s.saveRecord(heldFile, names, "held accounts")
}

// HeldAccounts returns the admin-held accounts.
func (s *Spool) HeldAccounts() ([]string, error) {
	var names []string
	return names, s.loadRecord(heldFile, &names)
}

// SaveHoldStarts stores when each account's condition hold began.
func (s *Spool) SaveHoldStarts(starts map[string]time.Time) error {
	return s.saveRecord(holdsFile, starts, "hold starts")
}

// HoldStarts returns when each account's condition hold began.
func (s *Spool) HoldStarts() (map[string]time.Time, error) {
	starts := map[string]time.Time{}
	return starts, s.loadRecord(holdsFile, &starts)
}

// saveRecord writes v as JSON to the spool file name durably.
func (s *Spool) saveRecord(name string, v any, what string) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	tmp, _, err := s.writeTemp(name+".", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("saving %s: %w", what, err)
	}
	if err := s.fs.Rename(tmp, name); err != nil {
		s.fs.Remove(tmp)
		return fmt.Errorf("saving %s: %w", what, err)
	}
	return s.syncDir()
}

// loadRecord reads the spool file name into v; a missing file leaves v
// as it is.
func (s *Spool) loadRecord(name string, v any) error {
	b, err := s.fs.ReadFile(name)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is corrupt (%v): move it aside and restart", filepath.Join(s.dir, name), err)
	}
	return nil
}
