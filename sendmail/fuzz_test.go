package sendmail

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"
)

// FuzzParseArgs: any command line parses or is refused with EX_USAGE.
func FuzzParseArgs(f *testing.F) {
	for _, s := range []string{"-t -i", "-ti -fa@b.c x@y.z", "-oi -- -x", "-bs", "-F Cron -B8BITMIME -oem root"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		a, err := ParseArgs(strings.Split(line, " "))
		if err != nil {
			if se, ok := err.(*Error); !ok || se.Code != ExUsage {
				t.Fatalf("ParseArgs(%q) = %v, want a usage error", line, err)
			}
			return
		}
		for _, r := range a.Recipients {
			if r == "" || strings.Contains(r, ",") {
				t.Fatalf("ParseArgs(%q): recipient %q", line, r)
			}
		}
	})
}

// FuzzPrepare: any message on stdin is prepared or refused with a
// sendmail exit status (or ErrTooLarge, when the header alone is beyond
// max_message_size: the callers answer EX_DATAERR); a prepared one keeps
// no Bcc: and ends its header with an empty line.
func FuzzPrepare(f *testing.F) {
	for _, s := range []string{"To: a@b.c\nBcc: d@e.f\n\nx\n", "From x\nSubject: y\n\nz", "To: <\n", " folded\nTo: a@b.c\n\n", "\n\n"} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, msg string, extract bool) {
		env := Env{Config: testConfig(t), Now: time.Unix(0, 0)}
		p, err := Prepare(env, Caller{}, &Request{ExtractRecipients: extract, Recipients: []string{"r@y.org"}}, strings.NewReader(msg))
		if err != nil {
			if _, ok := err.(*Error); !ok && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("Prepare(%q) = %v, want a sendmail error", msg, err)
			}
			return
		}
		h := string(p.Header)
		if !strings.HasSuffix(h, "\r\n\r\n") && h != "\r\n" {
			t.Fatalf("header %q does not end in an empty line", h)
		}
		for _, l := range strings.Split(h, "\r\n") {
			if strings.HasPrefix(strings.ToLower(l), "bcc:") {
				t.Fatalf("Bcc: kept: %q", h)
			}
		}
		io.ReadAll(p.Body)
	})
}
