package queue

import (
	"bytes"
	"encoding/json"
	"errors"

	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
)

// recordingFS logs every operation on the real file system and can fail
// one of them.
type recordingFS struct {
	FS
	mu     sync.Mutex
	ops    []string
	failOp string // e.g. "sync msg": fail the first operation with this name
}

var errInjected = errors.New("injected failure")

func (r *recordingFS) do(op string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.ops = append(r.ops, op)
	if r.failOp != "" && op == r.failOp {
		r.failOp = ""
		return errInjected
	}
	return nil
}

// kind names a path by what it is: spool, msg, json, dir.
func kind(name string) string {
	switch {
	case strings.Contains(filepath.Base(name), ".spool"):
		return "spool"
	case strings.Contains(filepath.Base(name), ".msg"):
		return "msg"
	case strings.Contains(filepath.Base(name), ".json"):
		return "json"
	}
	return "dir"
}

// wrap is the Options.WrapFS / OpenSpool argument that puts r around the
// real file system.
func (r *recordingFS) wrap(real FS) FS {
	r.FS = real
	return r
}

func (r *recordingFS) Create(name string) (File, error) {
	if err := r.do("create " + kind(name)); err != nil {
		return nil, err
	}
	f, err := r.FS.Create(name)
	if err != nil {
		return nil, err
	}
	return &recordingFile{File: f, fs: r, kind: kind(name)}, nil
}

func (r *recordingFS) Remove(name string) error {
	if err := r.do("remove " + kind(name)); err != nil {
		return err
	}
	return r.FS.Remove(name)
}

func (r *recordingFS) CreateTemp(prefix string) (File, error) {
	f, err := r.FS.CreateTemp(prefix)
	if err != nil {
		return nil, err
	}
	return &recordingFile{File: f, fs: r, kind: kind(prefix)}, nil
}

func (r *recordingFS) Rename(o, n string) error {
	if err := r.do("rename " + kind(n)); err != nil {
		return err
	}
	return r.FS.Rename(o, n)
}

func (r *recordingFS) SyncDir() error {
	if err := r.do("syncdir"); err != nil {
		return err
	}
	return r.FS.SyncDir()
}

type recordingFile struct {
	File
	fs   *recordingFS
	kind string
}

func (f *recordingFile) Write(b []byte) (int, error) {
	if err := f.fs.do("write " + f.kind); err != nil {
		return 0, err
	}
	return f.File.Write(b)
}

func (f *recordingFile) WriteAt(b []byte, off int64) (int, error) {
	if err := f.fs.do("writeat " + f.kind); err != nil {
		return 0, err
	}
	return f.File.WriteAt(b, off)
}

func (f *recordingFile) Sync() error {
	if err := f.fs.do("sync " + f.kind); err != nil {
		return err
	}
	return f.File.Sync()
}

func (f *recordingFile) Close() error {
	f.fs.do("close " + f.kind)
	return f.File.Close()
}

// dedupe collapses repeated writes.
func dedupe(ops []string) []string {
	var out []string
	for _, op := range ops {
		if len(out) > 0 && out[len(out)-1] == op {
			continue
		}
		out = append(out, op)
	}
	return out
}

func newEntry() *Entry {
	now := time.Now()
	return &Entry{ID: newID(now), Account: "a", From: "a@example.com", Created: now, State: StateQueued,
		Recipients: []Recipient{{Addr: "b@example.net", State: RcptPending}}}
}

// The acknowledgement may only come after the message file is written
// whole (its header line last, with the lengths that say it is finished),
// fsynced and closed, and the directory fsynced. Nothing is renamed:
// that would take the file system a second commit.
func TestPutDurabilityOrder(t *testing.T) {
	fs := &recordingFS{}
	sp, err := OpenSpool(t.TempDir(), fs.wrap)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Put(newEntry(), strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	want := []string{"create spool", "write spool", "writeat spool", "sync spool", "close spool", "syncdir"}
	if got := dedupe(fs.ops); !slices.Equal(got, want) {
		t.Errorf("operations %v, want %v", got, want)
	}
}

// A failure at any step is an error, and nothing of the message remains,
// now or after a restart.
func TestPutFailureLeavesNothing(t *testing.T) {
	for _, op := range []string{"create spool", "write spool", "writeat spool", "sync spool", "syncdir"} {
		t.Run(op, func(t *testing.T) {
			fs := &recordingFS{failOp: op}
			dir := t.TempDir()
			sp, err := OpenSpool(dir, fs.wrap)
			if err != nil {
				t.Fatal(err)
			}
			if err := sp.Put(newEntry(), strings.NewReader("Subject: x\r\n\r\nbody\r\n")); !errors.Is(err, errInjected) {
				t.Fatalf("Put() with %s failing = %v, want the injected error", op, err)
			}
			assertEmpty(t, dir)
			entries, err := sp.Recover()
			if err != nil || len(entries) != 0 {
				t.Errorf("Recover() = %v, %v; want nothing", entries, err)
			}
		})
	}
}

// A message whose fsync failed, and whose file could not be removed
// either, is left torn: recovery deletes it instead of queueing a message
// whose client was told 452.
func TestPutFailureThatCannotBeRemoved(t *testing.T) {
	dir := t.TempDir()
	fs := &stuckFS{recordingFS: &recordingFS{failOp: "sync spool"}}
	sp, err := OpenSpool(dir, fs.wrap)
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	sp.bootIDFile = filepath.Join(t.TempDir(), "boot_id")
	os.WriteFile(sp.bootIDFile, []byte("boot-1\n"), 0o600)
	if err := sp.Put(newEntry(), strings.NewReader("Subject: x\r\n\r\nbody\r\n")); !errors.Is(err, errInjected) {
		t.Fatalf("Put() = %v, want the injected error", err)
	}
	left, _ := filepath.Glob(filepath.Join(dir, "*.spool"))
	if len(left) != 1 {
		t.Fatalf("spool files left: %v; want the one that could not be removed", left)
	}
	// The same boot and mount as the last checked recovery: only the
	// header line decides.
	_, record := sp.verifyAfterBoot()
	if err := sp.saveRecord(bootFile, record, "test"); err != nil {
		t.Fatal(err)
	}
	fs.stuck = false
	entries, err := sp.Recover()
	if err != nil || len(entries) != 0 || sp.LastRecovery().Torn != 1 {
		t.Errorf("Recover() = %v, %v, %+v; want the file deleted as torn", entries, err, sp.LastRecovery())
	}
}

// stuckFS cannot remove spool files while stuck.
type stuckFS struct {
	*recordingFS
	stuck bool
}

func (s *stuckFS) wrap(real FS) FS {
	s.recordingFS.FS = real
	s.stuck = true
	return s
}

func (s *stuckFS) Remove(name string) error {
	if s.stuck && strings.HasSuffix(name, ".spool") {
		return errInjected
	}
	return s.recordingFS.Remove(name)
}

func assertEmpty(t *testing.T, dir string) {
	t.Helper()
	var files []string
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if len(files) != 0 {
		t.Errorf("files left behind: %v", files)
	}
}

// openTestSpool opens a spool in dir whose boot ID is read from a file
// the test writes (setBoot).
func openTestSpool(t *testing.T, dir string) (sp *Spool, setBoot func(id string)) {
	t.Helper()
	sp, err := OpenSpool(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(sp.Close)
	sp.bootIDFile = filepath.Join(t.TempDir(), "boot_id")
	return sp, func(id string) { os.WriteFile(sp.bootIDFile, []byte(id+"\n"), 0o600) }
}

// Recovery keeps complete entries: a spool file as Put left it, one whose
// metadata changed since (ID.json), and an older relayd's pair of files.
// It removes the remains of unacknowledged submissions (temporary files,
// a spool file that was never finished, a file without its partner), sets
// a damaged spool file aside as ID.damaged, and leaves a newer relayd's
// alone. Each case has an ID of its own, so that only the check it is
// about can turn it away.
func TestRecover(t *testing.T) {
	dir := t.TempDir()
	sp, setBoot := openTestSpool(t, dir)
	setBoot("boot-1")
	const body = "Subject: x\r\n\r\nx\r\n"
	put := newEntry()
	if err := sp.Put(put, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	updated := newEntry()
	if err := sp.Put(updated, strings.NewReader(body)); err != nil {
		t.Fatal(err)
	}
	updated.Attempts = 3
	if err := sp.Update(updated); err != nil {
		t.Fatal(err)
	}
	old := newEntry()
	old.ID += "-old"
	old.Size = int64(len(body))
	oldMeta, _ := json.Marshal(old)
	os.WriteFile(filepath.Join(dir, old.ID+".msg"), []byte(body), 0o600)
	os.WriteFile(filepath.Join(dir, old.ID+".json"), oldMeta, 0o600)
	os.WriteFile(filepath.Join(dir, "lonely.msg"), []byte("an older relayd's message without metadata"), 0o600)
	os.WriteFile(filepath.Join(dir, "tmp", "x.json.123"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, "orphan.json"), []byte(`{"id":"orphan"}`), 0o600)

	whole, _ := os.ReadFile(filepath.Join(dir, put.ID+".spool"))
	n := 0
	file := func(make func(id string) []byte) string { // a case's spool file, under an ID of its own
		n++
		id := fmt.Sprintf("%s%02d", put.ID[:len(put.ID)-2], n)
		os.WriteFile(filepath.Join(dir, id+".spool"), make(id), 0o600)
		return id
	}
	mine := func(id string) []byte { return reID(t, whole, put.ID, id) } // finished, under id
	torn := []string{
		file(func(id string) []byte { return append(fileHeader(0, 0, 0), mine(id)[headerLen:]...) }), // header not rewritten
		file(func(id string) []byte { return mine(id)[:len(whole)-5] }),                              // cut short
		file(func(id string) []byte { return nil }),                                                  // empty
		file(func(id string) []byte { return mine(id)[:headerLen-3] }),                               // not even the header
		file(func(id string) []byte { return append(mine(id), "more"...) }),                          // longer than it says
	}
	damaged := []string{
		file(func(id string) []byte { b := mine(id); b[headerLen] = 0; return b }), // the message's first byte: the sum
		file(func(string) []byte { return whole }),                                 // another ID's file (its sum is right)
		file(func(id string) []byte { // metadata that does not parse, with a right sum
			b := mine(id)
			b[len(b)-1] = '!'
			return resum(b)
		}),
		file(func(id string) []byte { // metadata whose size is not the message's
			return resum(bytes.Replace(mine(id), fmt.Appendf(nil, `"size":%d,`, len(body)), fmt.Appendf(nil, `"size":%d,`, len(body)+1), 1))
		}),
		file(func(id string) []byte { b := mine(id); b[len(fileMagic)+3] = 'x'; return b }), // a header line that does not parse
	}
	newer := file(func(id string) []byte { b := mine(id); b[len(fileMagic)-2] = '2'; return b })
	finished := file(mine)

	entries, err := sp.Recover()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*Entry{}
	for _, e := range entries {
		got[e.ID] = e
	}
	want := []string{put.ID, updated.ID, old.ID, finished}
	if len(got) != len(want) {
		t.Errorf("Recover() = %v, want %v", slices.Sorted(maps.Keys(got)), want)
	}
	if got[updated.ID] == nil || got[updated.ID].Attempts != 3 {
		t.Errorf("recovered %+v: its ID.json was not preferred to what Put stored", got[updated.ID])
	}
	for _, id := range want {
		e := got[id]
		if e == nil || e.Size != int64(len(body)) || e.Account != "a" || len(e.Recipients) != 1 {
			t.Errorf("recovered %s: %+v", id, e)
			continue
		}
		f, err := sp.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(f)
		f.Close()
		if string(b) != body {
			t.Errorf("message %s = %q, want %q", id, b, body)
		}
	}
	var names []string
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		names = append(names, de.Name())
	}
	wantNames := []string{put.ID + ".spool", updated.ID + ".json", updated.ID + ".spool", old.ID + ".json", old.ID + ".msg",
		finished + ".spool", newer + ".spool", bootFile, "tmp"}
	for _, id := range damaged {
		wantNames = append(wantNames, id+".damaged")
	}
	slices.Sort(wantNames)
	if !slices.Equal(names, wantNames) {
		t.Errorf("spool after recovery:\n%v\nwant\n%v", names, wantNames)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp not emptied: %v", tmp)
	}
	rec := sp.LastRecovery()
	if rec.Torn != len(torn) || len(rec.Damaged) != len(damaged) || len(rec.Newer) != 1 {
		t.Errorf("LastRecovery() = %+v, want %d torn, %d damaged and %s newer", rec, len(torn), len(damaged), newer)
	}
}

// reID returns a spool file's bytes with its ID in the metadata replaced
// by to (of the same length) and the sum made right.
func reID(t *testing.T, file []byte, from, to string) []byte {
	t.Helper()
	if len(from) != len(to) {
		t.Fatal("IDs of different lengths")
	}
	b := slices.Clone(file)
	size, _, _, _ := parseHeader(b[:headerLen])
	meta := b[int64(headerLen)+size:]
	copy(meta, bytes.Replace(meta, []byte(`"id":"`+from), []byte(`"id":"`+to), 1))
	return resum(b)
}

// resum makes a spool file's sum match its bytes, keeping its lengths.
func resum(b []byte) []byte {
	size, metaLen, _, _ := parseHeader(b[:headerLen])
	copy(b, fileHeader(size, metaLen, crc32.Checksum(b[headerLen:], castagnoli)))
	return b
}

// A message whose spool file changed after recovery accepted it is an
// error naming the file when it is opened, not a message sent short.
func TestOpenChecksTheFile(t *testing.T) {
	dir := t.TempDir()
	sp, _ := openTestSpool(t, dir)
	e := newEntry()
	if err := sp.Put(e, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, e.ID+".spool")
	whole, _ := os.ReadFile(path)
	for name, b := range map[string][]byte{
		"cut short":       whole[:len(whole)-3],
		"header zeros":    append(fileHeader(0, 0, 0), whole[headerLen:]...),
		"header unparsed": append([]byte("Received: x"), whole[11:]...),
	} {
		os.WriteFile(path, b, 0o600)
		if f, err := sp.Open(e.ID); err == nil || !strings.Contains(err.Error(), path) {
			if f != nil {
				f.Close()
			}
			t.Errorf("%s: Open() = %v, want an error naming %s", name, err, path)
		}
	}
}

// The sums are checked once per boot and mount: a start in the boot that
// recovered last trusts finished header lines (only a power cut can make
// one lie, and that means a new boot); a start after a boot checks them
// again. No boot is recorded when the kernel does not say which, or when
// recovery could not remove what it had to.
func TestRecoverChecksSumsAfterBoot(t *testing.T) {
	dir := t.TempDir()
	sp, setBoot := openTestSpool(t, dir)
	setBoot("boot-1")
	e := newEntry()
	if err := sp.Put(e, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	if l, err := sp.Recover(); err != nil || len(l) != 1 {
		t.Fatalf("Recover() = %v, %v", l, err)
	}
	var last string
	if err := sp.loadRecord(bootFile, &last); err != nil || !strings.HasPrefix(last, "boot-1 mount ") {
		t.Errorf("boot recorded: %q, %v", last, err)
	}
	// As a power cut could leave it: the message's first bytes zero.
	path := filepath.Join(dir, e.ID+".spool")
	b, _ := os.ReadFile(path)
	copy(b[headerLen:], "\x00\x00")
	os.WriteFile(path, b, 0o600)
	if l, err := sp.Recover(); err != nil || len(l) != 1 {
		t.Fatalf("Recover() in the same boot = %v, %v; want the file trusted", l, err)
	}
	setBoot("boot-2")
	if l, err := sp.Recover(); err != nil || len(l) != 0 {
		t.Fatalf("Recover() after a boot = %v, %v; want the damaged file set aside", l, err)
	}
	if _, err := os.Stat(filepath.Join(dir, e.ID+".damaged")); err != nil {
		t.Errorf("damaged file not set aside: %v", err)
	}
	if err := sp.loadRecord(bootFile, &last); err != nil || !strings.HasPrefix(last, "boot-2 mount ") {
		t.Errorf("boot recorded: %q, %v", last, err)
	}

	// The kernel does not say: every start checks, nothing is recorded.
	os.Remove(filepath.Join(dir, bootFile))
	os.Remove(sp.bootIDFile)
	sp.Recover()
	if _, err := os.Stat(filepath.Join(dir, bootFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a boot was recorded without a boot ID: %v", err)
	}

	// A torn file that could not be removed keeps the next start checking.
	fs := &recordingFS{failOp: "remove spool"}
	sp2, err := OpenSpool(dir, fs.wrap)
	if err != nil {
		t.Fatal(err)
	}
	defer sp2.Close()
	sp2.bootIDFile = sp.bootIDFile
	setBoot("boot-3")
	os.WriteFile(filepath.Join(dir, "torn.spool"), nil, 0o600)
	if _, err := sp2.Recover(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, bootFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a boot was recorded though a torn file stayed: %v", err)
	}
}

// Remove takes the spool file first: a crash after it leaves a lone
// ID.json, which recovery removes, where a lone spool file would hold the
// metadata Put stored and be queued again.
func TestRemoveOrder(t *testing.T) {
	fs := &recordingFS{}
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, fs.wrap)
	e := newEntry()
	if err := sp.Put(e, strings.NewReader("Subject: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if err := sp.Update(e); err != nil {
		t.Fatal(err)
	}
	fs.ops = nil
	if err := sp.Remove(e.ID); err != nil {
		t.Fatal(err)
	}
	if want := []string{"remove spool", "remove msg", "remove json"}; !slices.Equal(fs.ops, want) {
		t.Errorf("Remove: %v, want %v", fs.ops, want)
	}
	if des, _ := os.ReadDir(dir); len(des) != 1 || des[0].Name() != "tmp" {
		t.Errorf("after Remove the spool holds %v", des)
	}
}

// A spool file's header line is fixed in length and checked whole.
func TestFileHeader(t *testing.T) {
	h := fileHeader(10240, 412, 0xdeadbeef)
	if len(h) != headerLen {
		t.Fatalf("header %q is %d bytes, want %d", h, len(h), headerLen)
	}
	if b, m, c, ok := parseHeader(h); !ok || b != 10240 || m != 412 || c != 0xdeadbeef {
		t.Errorf("parseHeader(%q) = %d, %d, %x, %v", h, b, m, c, ok)
	}
	for _, bad := range []string{
		"relayd-spool 2 0000000000002800 0000019c deadbeef\n",
		"relayd-spool 1 0000000000002800 0000019c deadbeef ",
		"relayd-spool 1 000000000000280x 0000019c deadbeef\n",
		"relayd-spool 1 0000000000002800-0000019c deadbeef\n",
		"relayd-spool 1 8000000000002800 0000019c deadbeef\n",
		"relayd-spool 1 0000000000002800 8000019c deadbeef\n",
		"relayd-spool 1 +000000000002800 0000019c deadbeef\n",
		"Received: from x by y; Tue, 1 Dec 2026 00:00:00 +0000\n",
	} {
		if _, _, _, ok := parseHeader([]byte(bad)); ok {
			t.Errorf("parseHeader(%q) accepted", bad)
		}
	}
}

// Concurrent submissions share directory fsyncs (group commit) and all
// survive.
func TestGroupCommit(t *testing.T) {
	fs := &slowSyncFS{recordingFS: &recordingFS{}}
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, fs.wrap)
	const n = 32
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := sp.Put(newEntry(), strings.NewReader(fmt.Sprintf("Subject: %d\r\n\r\n", i))); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	syncs := 0
	for _, op := range fs.ops {
		if op == "syncdir" {
			syncs++
		}
	}
	if syncs >= n {
		t.Errorf("%d directory fsyncs for %d concurrent messages: no group commit", syncs, n)
	}
	entries, _ := sp.Recover()
	if len(entries) != n {
		t.Errorf("recovered %d of %d", len(entries), n)
	}
}

// slowSyncFS makes a directory fsync take long enough for others to queue
// behind it, as on a real disk.
type slowSyncFS struct{ *recordingFS }

func (s *slowSyncFS) SyncDir() error {
	time.Sleep(2 * time.Millisecond)
	return s.recordingFS.SyncDir()
}

func (s *slowSyncFS) wrap(real FS) FS {
	s.recordingFS.FS = real
	return s
}

// An admin's hold of an account survives a restart.
func TestAccountHoldPersists(t *testing.T) {
	dir := t.TempDir()
	accounts := func(name string) *auth.Account {
		if name == "a" {
			return &auth.Account{Config: &config.Account{Name: "a"}}
		}
		return nil
	}
	q, err := Open(Options{Dir: dir, Accounts: accounts})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Hold("a"); err != nil {
		t.Fatal(err)
	}
	q.Close()
	q2, err := Open(Options{Dir: dir, Accounts: accounts})
	if err != nil {
		t.Fatal(err)
	}
	if !q2.health(q2.account("a")).AdminHeld() {
		t.Fatal("hold lost on restart")
	}
	if _, err := q2.Release("a"); err != nil {
		t.Fatal(err)
	}
	q2.Close()
	q3, _ := Open(Options{Dir: dir, Accounts: accounts})
	if q3.health(q3.account("a")).AdminHeld() {
		t.Error("release lost on restart")
	}
}

// One process at a time uses a spool: a second daemon, or an offline
// relayd queue command while the daemon starts, is refused with the
// holder's process ID, and gets it once the first lets go.
func TestSpoolLock(t *testing.T) {
	dir := t.TempDir()
	accounts := func(string) *auth.Account { return nil }
	q, err := Open(Options{Dir: dir, Accounts: accounts})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(Options{Dir: dir, Accounts: accounts})
	if !errors.Is(err, ErrSpoolBusy) {
		t.Fatalf("second Open = %v, want ErrSpoolBusy", err)
	}
	if want := fmt.Sprintf("process %d", os.Getpid()); !strings.Contains(err.Error(), want) {
		t.Errorf("second Open = %q, want it to name the holder (%s)", err, want)
	}

	waited := make(chan error, 1)
	go func() {
		q2, err := Open(Options{Dir: dir, Accounts: accounts, LockWait: time.Minute})
		if err == nil {
			q2.Close()
		}
		waited <- err
	}()
	if err := q.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-waited; err != nil {
		t.Errorf("Open with LockWait after the holder closed = %v, want nil", err)
	}
}

// An admin's hold belongs to the account's condition, and holds again when
// a reload re-creates that condition (an account removed and added back).
func TestAccountHoldOutlivesANewCondition(t *testing.T) {
	dir := t.TempDir()
	cur := &auth.Account{Config: &config.Account{Name: "a"}, Health: health.New("a", health.Options{})}
	q, err := Open(Options{Dir: dir, Accounts: func(name string) *auth.Account {
		if name == "a" {
			return cur
		}
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if _, err := q.Hold("a"); err != nil {
		t.Fatal(err)
	}
	if !cur.Health.AdminHeld() {
		t.Fatal("Hold(a): the account's condition does not say so")
	}
	cur = &auth.Account{Config: &config.Account{Name: "a"}, Health: health.New("a", health.Options{})}
	if held, why, _ := q.health(q.account("a")).Outgoing(); !held || why != "admin" {
		t.Errorf("new condition after a reload: Outgoing() = %v, %q; want held by the admin", held, why)
	}
	if _, err := q.Release("a"); err != nil {
		t.Fatal(err)
	}
	if cur.Health.AdminHeld() {
		t.Error("Release(a) left the hold")
	}
}
