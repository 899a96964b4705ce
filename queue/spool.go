package queue

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strconv"
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
	// bootIDFile is where the kernel gives the boot's ID (tests change
	// it; see verifyAfterBoot).
	bootIDFile string
	recovery   Recovery // what the last Recover set aside

	smu     sync.Mutex
	pending *syncBatch // new names waiting for the next directory fsync
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
	return &Spool{dir: dir, fs: fs, real: real, bootIDFile: "/proc/sys/kernel/random/boot_id"}, nil
}

// Close closes the spool's directories.
func (s *Spool) Close() { s.real.close() }

func spoolName(id string) string { return id + ".spool" }
func msgName(id string) string   { return id + ".msg" } // an older relayd's
func metaName(id string) string  { return id + ".json" }

// writeTemp writes r to a new file in tmp/ and fsyncs it.
func (s *Spool) writeTemp(prefix string, r io.Reader) (name string, n int64, err error) {
	f, err := s.fs.CreateTemp(prefix)
	if err != nil {
		return "", 0, err
	}
	name = f.Name()
	n, err = copyPooled(f, r)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		s.fs.Remove(name)
		return "", 0, err
	}
	return name, n, nil
}

// copyBufs are the spool's copy buffers: io.Copy would allocate 32 KiB
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

// A spool file, ID.spool, is what Put writes: its header line, the
// message, then its metadata as Put stored it:
//
//	relayd-spool 1 BBBBBBBBBBBBBBBB MMMMMMMM CCCCCCCC\n
//
// where B is the message's length and M the metadata's, and C the CRC-32C
// of both, in hex. Put writes the line with zeros first and the real one
// last, then fsyncs. A file whose lengths do not add up to its size was
// never finished. Only a power cut can leave one that looks finished and
// is not (the file system may write its blocks in any order before the
// fsync): after a boot, recovery checks the sum too (verifyAfterBoot).
//
// An older relayd wrote ID.msg, the message alone, with its metadata in
// ID.json; its files are read as they are. It ignores ID.spool, so a
// downgrade leaves new messages on disk, unsent, rather than losing them.
const (
	fileMagic = "relayd-spool 1 "
	headerLen = len(fileMagic) + 16 + 1 + 8 + 1 + 8 + 1
)

// fileHeader is the header line of a spool file.
func fileHeader(body, meta int64, sum uint32) []byte {
	return fmt.Appendf(make([]byte, 0, headerLen), "%s%016x %08x %08x\n", fileMagic, body, meta, sum)
}

// parseHeader returns the lengths and the sum a spool file's header line
// gives.
func parseHeader(h []byte) (body, meta int64, sum uint32, ok bool) {
	if len(h) != headerLen || string(h[:len(fileMagic)]) != fileMagic || h[headerLen-1] != '\n' {
		return 0, 0, 0, false
	}
	f := strings.Split(string(h[len(fileMagic):headerLen-1]), " ")
	if len(f) != 3 || len(f[0]) != 16 || len(f[1]) != 8 || len(f[2]) != 8 {
		return 0, 0, 0, false
	}
	b, err1 := strconv.ParseUint(f[0], 16, 63)
	m, err2 := strconv.ParseUint(f[1], 16, 31)
	c, err3 := strconv.ParseUint(f[2], 16, 32)
	if err1 != nil || err2 != nil || err3 != nil {
		return 0, 0, 0, false
	}
	return int64(b), int64(m), uint32(c), true
}

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// crcWriter writes to w and sums what it wrote.
type crcWriter struct {
	w   io.Writer
	sum uint32
}

func (c *crcWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.sum = crc32.Update(c.sum, castagnoli, p[:n])
	return n, err
}

// Put stores a new message: one new file, ID.spool, holding the message
// and e's metadata (with e.Size set), fsynced, then the directory fsynced.
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

// put writes the message in place rather than in tmp/ and renaming it: a
// rename after the file's fsync made the file system commit twice before
// the client could have its 250, where now it commits once (the
// directory's fsync finds the new name already committed with the file on
// a journalling file system). Recover tells a finished file from the
// remains of a crash by its header line.
func (s *Spool) put(e *Entry, body io.Reader) error {
	f, err := s.fs.Create(spoolName(e.ID))
	if err != nil {
		return fmt.Errorf("writing message: %w", err)
	}
	err = writeMessage(f, e, body)
	if err != nil {
		// Should the removal below fail too, what is left is a torn
		// file, which recovery deletes, and not a finished one whose
		// client was told 452.
		f.WriteAt(fileHeader(0, 0, 0), 0)
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("writing message: %w", cerr)
	}
	if err != nil {
		s.fs.Remove(spoolName(e.ID))
		return err
	}
	fault.Hit("after-sync")
	if err := s.syncDir(); err != nil {
		s.fs.Remove(spoolName(e.ID))
		return fmt.Errorf("syncing spool directory: %w", err)
	}
	return nil
}

// writeMessage writes a spool file (see fileHeader) to f and fsyncs it.
func writeMessage(f File, e *Entry, body io.Reader) error {
	if _, err := f.Write(fileHeader(0, 0, 0)); err != nil {
		return fmt.Errorf("writing message: %w", err)
	}
	w := &crcWriter{w: f}
	n, err := copyPooled(w, body)
	if err != nil {
		return fmt.Errorf("writing message: %w", err)
	}
	e.Size = n
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	if _, err := w.Write(b); err != nil {
		return fmt.Errorf("writing metadata: %w", err)
	}
	if _, err := f.WriteAt(fileHeader(n, int64(len(b)), w.sum), 0); err != nil {
		return fmt.Errorf("writing message: %w", err)
	}
	fault.Hit("after-write")
	if err := f.Sync(); err != nil {
		return fmt.Errorf("writing message: %w", err)
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

// Remove deletes a message: its spool file first, so that a crash in
// between leaves a lone ID.json, which recovery removes. (A lone spool
// file holds the metadata it was put with, and recovery would queue it
// again.)
func (s *Spool) Remove(id string) error {
	for _, name := range []string{spoolName(id), msgName(id), metaName(id)} {
		if err := s.fs.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}

// Open returns the stored message.
func (s *Spool) Open(id string) (io.ReadCloser, error) {
	f, err := s.fs.Open(spoolName(id))
	if errors.Is(err, os.ErrNotExist) {
		return s.fs.Open(msgName(id)) // an older relayd's: the message alone
	} else if err != nil {
		return nil, err
	}
	var h [headerLen]byte
	_, err = io.ReadFull(f, h[:])
	size, metaLen, _, ok := parseHeader(h[:])
	if err == nil && (!ok || metaLen == 0) {
		err = errors.New("its header line is damaged")
	}
	if err == nil {
		var fi os.FileInfo
		if fi, err = f.Stat(); err == nil && fi.Size() != int64(headerLen)+size+metaLen {
			err = fmt.Errorf("it is %d bytes long where its header line says %d", fi.Size(), int64(headerLen)+size+metaLen)
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", filepath.Join(s.dir, spoolName(id)), err)
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(f, size), f}, nil
}

// fileState is what recovery makes of a spool file without ID.json.
type fileState int

const (
	fileFinished fileState = iota
	// fileTorn was never finished: its header line still zeros, or the
	// file shorter or longer than the lengths it gives. The remains of a
	// submission a crash interrupted, never acknowledged.
	fileTorn
	// fileDamaged looks finished, but its sum (checked after a boot),
	// metadata or ID is wrong: torn by a power cut, or damaged on the
	// disk since. It may have been acknowledged.
	fileDamaged
	// fileNewer was written by a newer relayd, in a layout this one does
	// not know.
	fileNewer
)

// readPut returns the metadata a spool file holds, as Put wrote it, and
// what the file is. With verify, the sum of the message and metadata is
// checked too.
func (s *Spool) readPut(id string, verify bool) (*Entry, fileState, error) {
	f, err := s.fs.Open(spoolName(id))
	if err != nil {
		return nil, 0, err
	}
	defer f.Close()
	var h [headerLen]byte
	if _, err := io.ReadFull(f, h[:]); err == io.EOF || err == io.ErrUnexpectedEOF {
		return nil, fileTorn, nil
	} else if err != nil {
		return nil, 0, err
	}
	size, metaLen, sum, ok := parseHeader(h[:])
	switch {
	case !ok && bytes.HasPrefix(h[:], []byte("relayd-spool ")) && !bytes.HasPrefix(h[:], []byte(fileMagic)):
		return nil, fileNewer, nil
	case !ok:
		return nil, fileDamaged, nil
	case size == 0 && metaLen == 0 && sum == 0:
		return nil, fileTorn, nil
	}
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, err
	}
	if fi.Size() != int64(headerLen)+size+metaLen {
		return nil, fileTorn, nil
	}
	if verify {
		w := &crcWriter{w: io.Discard}
		if _, err := copyPooled(w, io.NewSectionReader(f, int64(headerLen), size+metaLen)); err != nil {
			return nil, 0, err
		}
		if w.sum != sum {
			return nil, fileDamaged, nil
		}
	}
	b := make([]byte, metaLen)
	if _, err := f.ReadAt(b, int64(headerLen)+size); err != nil {
		return nil, 0, err
	}
	e := new(Entry)
	if err := json.Unmarshal(b, e); err != nil || e.ID != id || e.Size != size {
		return nil, fileDamaged, nil
	}
	return e, fileFinished, nil
}

// damagedName is where recovery sets a damaged spool file aside: no
// longer a message relayd sends, kept for an admin to look at.
func damagedName(id string) string { return id + ".damaged" }

// Recovery is what the last Recover found besides the entries it
// returned, for the queue to log.
type Recovery struct {
	Torn    int      // unfinished spool files removed
	Damaged []string // spool files set aside as ID.damaged (their paths now)
	Newer   []string // spool files of a newer relayd, left as they are
}

// LastRecovery returns what the last Recover set aside.
func (s *Spool) LastRecovery() Recovery { return s.recovery }

// bootFile records the boot (the kernel's boot_id) in which a relayd last
// recovered the spool. Within one boot the page cache is what every
// reader sees, and a spool file whose header line says it is finished is
// finished; after a boot (a power cut may have come between) recovery
// checks each spool file's sum as well: it reads every queued message
// once.
//
// Not .json (a message's metadata): .list like relayd's other bookkeeping
// files in the spool, which tools that look for leftover mail skip.
const bootFile = "recovered-boot.list"

// verifyAfterBoot reports whether recovery must check sums, and what
// identifies this boot and this mount of the spool's file system ("" when
// the kernel does not say): a file system mounted again within a boot
// (after its disk went away, or a snapshot restored) may hold torn files
// too.
func (s *Spool) verifyAfterBoot() (verify bool, boot string) {
	b, err := os.ReadFile(s.bootIDFile)
	if boot = strings.TrimSpace(string(b)); err != nil || boot == "" {
		return true, ""
	}
	mnt, err := s.real.top.MountID()
	if err != nil {
		return true, ""
	}
	boot += " mount " + strconv.FormatUint(mnt, 10)
	var last string
	if err := s.loadRecord(bootFile, &last); err != nil || last != boot {
		return true, boot
	}
	return false, boot
}

// Recover returns every complete entry and deletes the remains of
// submissions that were never acknowledged. An entry's metadata is its
// ID.json when there is one (the metadata changed since Put), else what
// Put wrote into ID.spool.
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
	verify, boot := s.verifyAfterBoot()
	spools := map[string]bool{}
	msgs := map[string]bool{}
	metas := map[string]bool{}
	for _, de := range des {
		name := de.Name()
		if id, ok := strings.CutSuffix(name, ".spool"); ok {
			spools[id] = true
		} else if id, ok := strings.CutSuffix(name, ".msg"); ok {
			msgs[id] = true
		} else if id, ok := strings.CutSuffix(name, ".json"); ok {
			metas[id] = true
		}
	}
	var entries []*Entry
	for id := range metas {
		if !spools[id] && !msgs[id] {
			s.fs.Remove(metaName(id))
			continue
		}
		b, err := s.fs.ReadFile(metaName(id))
		if err != nil {
			return nil, fmt.Errorf("reading spool entry %s: %w", id, err)
		}
		var e Entry
		if err := json.Unmarshal(b, &e); err != nil || e.ID != id {
			file := msgName(id)
			if spools[id] {
				file = spoolName(id)
			}
			return nil, fmt.Errorf("spool entry %s is corrupt (%v): move %s and %s aside and restart", id, err, filepath.Join(s.dir, metaName(id)), filepath.Join(s.dir, file))
		}
		e.upgrade()
		entries = append(entries, &e)
	}
	s.recovery = Recovery{}
	clean := true // every file that is not a message is gone or set aside
	for id := range spools {
		if metas[id] {
			continue
		}
		e, state, err := s.readPut(id, verify)
		if err != nil {
			return nil, fmt.Errorf("reading spool entry %s: %w", id, err)
		}
		switch state {
		case fileFinished:
			e.upgrade()
			entries = append(entries, e)
		case fileTorn:
			if s.fs.Remove(spoolName(id)) != nil {
				clean = false
			}
			s.recovery.Torn++
		case fileDamaged:
			if err := s.fs.Rename(spoolName(id), damagedName(id)); err != nil {
				return nil, fmt.Errorf("setting damaged spool file %s aside: %w", filepath.Join(s.dir, spoolName(id)), err)
			}
			s.recovery.Damaged = append(s.recovery.Damaged, filepath.Join(s.dir, damagedName(id)))
		case fileNewer:
			s.recovery.Newer = append(s.recovery.Newer, filepath.Join(s.dir, spoolName(id)))
		}
	}
	for id := range msgs {
		if !metas[id] {
			s.fs.Remove(msgName(id))
		}
	}
	if len(s.recovery.Damaged) > 0 {
		if err := s.syncDir(); err != nil {
			return nil, fmt.Errorf("setting damaged spool files aside: %w", err)
		}
	}
	if verify && boot != "" && clean {
		// Not an error when it fails: the next start checks sums again.
		s.saveRecord(bootFile, boot, "the boot recovered")
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
