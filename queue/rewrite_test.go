package queue

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// The copy a fallback sends in rewrite mode: From names the fallback's
// mailbox with the author's display name, Reply-To the author (unless
// there is one), Sender goes; every other byte stays.
func TestRewriteHeader(t *testing.T) {
	const box, env = "backup@example.com", "support@example.com"
	for _, tc := range []struct {
		name, in, want string
	}{
		{"display name",
			"Received: from x\r\n\tby y; today\r\nFrom: Support Desk <support@example.com>\r\nTo: c@example.net\r\nSubject: hi\r\n\r\n",
			"Received: from x\r\n\tby y; today\r\nFrom: \"Support Desk\" <backup@example.com>\r\nReply-To: Support Desk <support@example.com>\r\nTo: c@example.net\r\nSubject: hi\r\n\r\n"},
		{"bare address",
			"From: support@example.com\r\nSubject: hi\r\n\r\n",
			"From: <backup@example.com>\r\nReply-To: support@example.com\r\nSubject: hi\r\n\r\n"},
		{"reply-to kept",
			"from: \"Desk\" <support@example.com>\r\nReply-To: tickets@example.com\r\n\r\n",
			"From: \"Desk\" <backup@example.com>\r\nReply-To: tickets@example.com\r\n\r\n"},
		{"folded and not ASCII, encoded again",
			"Subject: x\r\nFrom: =?utf-8?q?Zo=C3=AB?=\r\n =?utf-8?q?_Support?= <support@example.com>\r\n\r\n",
			"Subject: x\r\nFrom: =?utf-8?q?Zo=C3=AB_Support?= <backup@example.com>\r\nReply-To: =?utf-8?q?Zo=C3=AB?=\r\n =?utf-8?q?_Support?= <support@example.com>\r\n\r\n"},
		{"charset net/mail does not know: the name as written",
			"From: =?windows-1252?Q?Ren=E9?= <support@example.com>\r\n\r\n",
			"From: =?windows-1252?Q?Ren=E9?= <backup@example.com>\r\nReply-To: <support@example.com>\r\n\r\n"},
		{"no From",
			"Subject: x\r\n\r\n",
			"Subject: x\r\nFrom: <backup@example.com>\r\nReply-To: <support@example.com>\r\n\r\n"},
		{"Sender and a second From go",
			"From: A <support@example.com>\r\nSender: support@example.com\r\nFrom: B <other@example.com>\r\n\r\n",
			"From: \"A\" <backup@example.com>\r\nReply-To: A <support@example.com>\r\n\r\n"},
		{"LF line ends",
			"From: A <support@example.com>\nSubject: x\n\n",
			"From: \"A\" <backup@example.com>\nReply-To: A <support@example.com>\nSubject: x\n\n"},
		{"no empty line",
			"From: A <support@example.com>\r\n",
			"From: \"A\" <backup@example.com>\r\nReply-To: A <support@example.com>\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := string(rewriteHeader([]byte(tc.in), box, env)); got != tc.want {
				t.Errorf("rewriteHeader:\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// A long display name is folded at spaces within 78 characters.
func TestRewriteHeaderFolds(t *testing.T) {
	name := strings.Repeat("Ünïcödé Sëndér ", 8)
	got := rewriteHeader([]byte("From: \""+name+"\" <support@example.com>\r\n\r\n"), "backup@example.com", "")
	from, _, _ := strings.Cut(string(got), "Reply-To:") // the sender's own line as written
	for _, l := range strings.Split(strings.TrimSuffix(from, "\r\n"), "\r\n") {
		if len(l) > 78 {
			t.Errorf("line of %d characters: %q", len(l), l)
		}
	}
	from = strings.ReplaceAll(strings.TrimSuffix(from, "\r\n"), "\r\n", "")
	if !strings.HasPrefix(from, "From: =?utf-8?q?") || !strings.HasSuffix(from, " <backup@example.com>") {
		t.Errorf("From = %q", from)
	}
}

// readHeader stops at the empty line; the body is left to read.
func TestReadHeader(t *testing.T) {
	br := bufio.NewReader(strings.NewReader("A: b\r\n c\r\n\r\nbody\r\n\r\nmore\r\n"))
	h, err := readHeader(br)
	if err != nil || string(h) != "A: b\r\n c\r\n\r\n" {
		t.Fatalf("readHeader = %q, %v", h, err)
	}
	rest := new(bytes.Buffer)
	rest.ReadFrom(br)
	if rest.String() != "body\r\n\r\nmore\r\n" {
		t.Errorf("rest = %q", rest)
	}
}

func FuzzRewriteHeader(f *testing.F) {
	f.Add([]byte("From: A <a@example.com>\r\nSender: x\r\n\r\n"))
	f.Add([]byte("From: =?x?q?y?= <a>\n\n"))
	f.Fuzz(func(t *testing.T, header []byte) {
		out := rewriteHeader(header, "backup@example.com", "a@example.com")
		if !bytes.Contains(out, []byte("<backup@example.com>")) {
			t.Errorf("no From naming the fallback in %q", out)
		}
	})
}
