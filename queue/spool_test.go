package queue

import (
	"errors"

	"fmt"
	"io"
	"os"
	"path/filepath"
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

// kind names a path by what it is: msg, json, dir.
func kind(name string) string {
	switch {
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

// The acknowledgement may only come after write → fsync → rename of the
// message and of its metadata, and the directory fsync. The two files are
// synced at once, so the order between them is open, but neither is
// renamed before both are synced: a message whose metadata is in place is
// complete.
func TestPutDurabilityOrder(t *testing.T) {
	fs := &recordingFS{}
	sp, err := OpenSpool(t.TempDir(), fs.wrap)
	if err != nil {
		t.Fatal(err)
	}
	if err := sp.Put(newEntry(), strings.NewReader("Subject: x\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	got := dedupe(fs.ops)
	at := map[string]int{}
	for i, op := range got {
		if _, dup := at[op]; dup {
			t.Fatalf("%q twice in %v", op, got)
		}
		at[op] = i
	}
	before := func(a, b string) {
		t.Helper()
		ia, oka := at[a]
		ib, okb := at[b]
		if !oka || !okb || ia >= ib {
			t.Errorf("%q must come before %q: %v", a, b, got)
		}
	}
	for _, k := range []string{"msg", "json"} {
		before("write "+k, "sync "+k)
		before("sync "+k, "close "+k)
		before("close "+k, "rename msg")
		before("rename "+k, "syncdir")
	}
	before("write msg", "write json") // the metadata holds the message's size
	before("rename msg", "rename json")
	if len(got) != 9 || got[len(got)-1] != "syncdir" {
		t.Errorf("operations %v: want the 9 of two files and the directory's fsync last", got)
	}
}

// A failure at any step is an error, and nothing of the message remains,
// now or after a restart.
func TestPutFailureLeavesNothing(t *testing.T) {
	for _, op := range []string{"write msg", "sync msg", "rename msg", "write json", "sync json", "rename json", "syncdir"} {
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

// Recovery keeps complete entries and removes the remains of unacknowledged
// submissions: temporary files and a message or metadata without its
// partner.
func TestRecover(t *testing.T) {
	dir := t.TempDir()
	sp, _ := OpenSpool(dir, nil)
	good := newEntry()
	if err := sp.Put(good, strings.NewReader("Subject: x\r\n\r\nx\r\n")); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tmp", "x.msg.123"), []byte("partial"), 0o600)
	os.WriteFile(filepath.Join(dir, "lonely.msg"), []byte("no metadata"), 0o600)
	os.WriteFile(filepath.Join(dir, "orphan.json"), []byte(`{"id":"orphan"}`), 0o600)
	entries, err := sp.Recover()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].ID != good.ID || entries[0].Size != int64(len("Subject: x\r\n\r\nx\r\n")) {
		t.Fatalf("Recover() = %+v", entries)
	}
	des, _ := os.ReadDir(dir)
	var names []string
	for _, de := range des {
		names = append(names, de.Name())
	}
	if strings.Join(names, " ") != good.ID+".json "+good.ID+".msg tmp" {
		t.Errorf("spool after recovery: %v", names)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp not emptied: %v", tmp)
	}
	f, _ := sp.Open(good.ID)
	b, _ := io.ReadAll(f)
	f.Close()
	if string(b) != "Subject: x\r\n\r\nx\r\n" {
		t.Errorf("message = %q", b)
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
