package queue

import (
	"bytes"
	"os"
	"path/filepath"
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
