package queue

import (
	"bytes"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// FuzzSpoolMetadata recovers a spool whose metadata file holds arbitrary
// bytes (a file from an older relayd, a torn or hand-edited one): Recover
// returns the entry or an error naming the files to move aside, never
// panics; a recovered entry can be listed, aged and bounced.
func FuzzSpoolMetadata(f *testing.F) {
	const id = "20261120T090000000000-2c42d16a42"
	if des, err := os.ReadDir("testdata/spool-v1"); err == nil {
		for _, de := range des {
			if strings.HasSuffix(de.Name(), ".json") {
				b, _ := os.ReadFile(filepath.Join("testdata/spool-v1", de.Name()))
				f.Add(bytes.ReplaceAll(b, []byte(strings.TrimSuffix(de.Name(), ".json")), []byte(id)))
			}
		}
	}
	for _, s := range []string{
		`{"id":"` + id + `","account":"support","from":"a@b","recipients":[{"addr":"c@d","state":"failed","reply":"550 5.1.1 no"}],"created":"2026-11-20T09:00:00Z","state":"failed"}`,
		`{"id":"` + id + `","recipients":[{"reply":"5x0 ","state":"pending"},{"reply":"  "}],"frozen":-9223372036854775808,"created":"0001-01-01T00:00:00Z"}`,
		`{"id":"` + id + `","recipients":null,"size":-1,"attempts":-5}`,
		`{"id":"other"}`,
		`{`,
		``,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, meta []byte) {
		os.WriteFile(filepath.Join(dir, metaName(id)), meta, 0o600)
		os.WriteFile(filepath.Join(dir, msgName(id)), []byte("Subject: x\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n"), 0o600)
		s, err := OpenSpool(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		entries, err := s.Recover()
		if err != nil {
			if !strings.Contains(err.Error(), "move ") {
				t.Fatalf("Recover error does not say what to do: %v", err)
			}
			return
		}
		for _, e := range entries {
			_ = e.pending()
			_ = e.age(now)
			c := e.clone()
			var failed []Recipient
			for _, r := range c.Recipients {
				if r.State == RcptFailed {
					failed = append(failed, r)
				}
			}
			buildDSN("relayd.test", "postmaster@relayd.test", c, failed, []byte("Subject: x\r\n\r\n"), now)
		}
		for _, format := range []string{"json", "text"} {
			var b bytes.Buffer
			if err := WriteList(&b, entries, format, now); err != nil {
				t.Fatalf("WriteList(%s): %v", format, err)
			}
		}
	})
}

// FuzzSpoolFile recovers a spool whose one spool file holds arbitrary
// bytes (torn by a power cut, or damaged), as the first start after a
// boot does: Recover never panics and never fails on the file's content;
// it queues the file only when it is one Put finished — lengths, sum and
// metadata agree — and a queued message opens to exactly its length.
// Anything else is removed or set aside, except a newer relayd's file.
func FuzzSpoolFile(f *testing.F) {
	const id = "20261201T090000000000-2c42d16a42"
	seedDir := f.TempDir()
	sp, err := OpenSpool(seedDir, nil)
	if err != nil {
		f.Fatal(err)
	}
	e := &Entry{ID: id, Account: "support", From: "a@b", State: StateQueued,
		Recipients: []Recipient{{Addr: "c@d", State: RcptPending}}}
	if err := sp.Put(e, strings.NewReader("Subject: x\r\nMessage-ID: <x@y>\r\n\r\nbody\r\n")); err != nil {
		f.Fatal(err)
	}
	sp.Close()
	whole, err := os.ReadFile(filepath.Join(seedDir, spoolName(id)))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(whole)
	f.Add(append(slices.Clone(whole), "more"...))
	f.Add(whole[:len(whole)/2])
	f.Add(whole[:headerLen])
	f.Add(append(fileHeader(0, 0, 0), whole[headerLen:]...))
	f.Add([]byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, file []byte) {
		os.WriteFile(filepath.Join(dir, spoolName(id)), file, 0o600)
		s, err := OpenSpool(dir, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.bootIDFile = filepath.Join(dir, "no-such-boot-id") // a check after a boot, every time
		entries, err := s.Recover()
		if err != nil {
			t.Fatalf("Recover: %v", err)
		}
		if len(entries) == 0 {
			rec := s.LastRecovery()
			_, err := os.Stat(filepath.Join(dir, spoolName(id)))
			if err == nil && len(rec.Newer) == 0 {
				t.Fatalf("a spool file that is not finished was left in place (%+v)", rec)
			}
			os.Remove(filepath.Join(dir, spoolName(id)))
			os.Remove(filepath.Join(dir, damagedName(id)))
			return
		}
		size, metaLen, sum, ok := parseHeader(file[:min(len(file), headerLen)])
		if len(entries) != 1 || !ok || int64(len(file)) != int64(headerLen)+size+metaLen ||
			crc32.Checksum(file[headerLen:], castagnoli) != sum || entries[0].ID != id || entries[0].Size != size {
			t.Fatalf("recovered %+v from a file that is not finished", entries)
		}
		rc, err := s.Open(id)
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(b, file[headerLen:int64(headerLen)+size]) {
			t.Fatalf("Open = %q, %v; want the message's %d bytes", b, err, size)
		}
		os.Remove(filepath.Join(dir, spoolName(id)))
	})
}
