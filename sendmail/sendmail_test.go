package sendmail

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/config"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want Args
		code int // a refusal's exit status
	}{
		{args: []string{"-t", "-i"}, want: Args{Request: Request{ExtractRecipients: true}, IgnoreDots: true}},
		{args: []string{"-ti"}, want: Args{Request: Request{ExtractRecipients: true}, IgnoreDots: true}},
		{args: []string{"-oi", "-f", "a@x.org", "b@y.org"}, want: Args{Request: Request{From: "a@x.org", Recipients: []string{"b@y.org"}}, IgnoreDots: true}},
		{args: []string{"-fa@x.org", "-FCron Daemon", "b@y.org, c@z.org"}, want: Args{Request: Request{From: "a@x.org", FullName: "Cron Daemon", Recipients: []string{"b@y.org", "c@z.org"}}}},
		{args: []string{"-r", "<a@x.org>", "-o", "i", "b@y.org"}, want: Args{Request: Request{From: "a@x.org", Recipients: []string{"b@y.org"}}, IgnoreDots: true}},
		// Debian's cron: sendmail -FCronDaemon -i -B8BITMIME -oem user
		{args: []string{"-FCronDaemon", "-i", "-B8BITMIME", "-oem", "root@example.org"}, want: Args{Request: Request{FullName: "CronDaemon", Recipients: []string{"root@example.org"}}, IgnoreDots: true}},
		{args: []string{"-odi", "-oem", "-bm", "-N", "never", "-v", "b@y.org", "-t"}, want: Args{Request: Request{ExtractRecipients: true, Recipients: []string{"b@y.org"}}, Verbose: true}},
		{args: []string{"-C", "/etc/r.toml", "--", "-odd@y.org", "-t"}, want: Args{Config: "/etc/r.toml", Request: Request{Recipients: []string{"-odd@y.org", "-t"}}}},
		{args: []string{"--help"}, want: Args{Help: true}},
		{args: []string{"-f"}, code: ExUsage},
		{args: []string{"-bs"}, code: ExUsage},
		{args: []string{"-bp"}, code: ExUsage},
		{args: []string{"-q30m"}, code: ExUsage},
		{args: []string{"-I"}, code: ExUsage},
		{args: []string{"-k"}, code: ExUsage},
		{args: []string{"--version"}, code: ExUsage},
	} {
		got, err := ParseArgs(tc.args)
		if tc.code != 0 {
			var se *Error
			if !errors.As(err, &se) || se.Code != tc.code {
				t.Errorf("ParseArgs(%q) = %v, want exit %d", tc.args, err, tc.code)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(*got, tc.want) {
			t.Errorf("ParseArgs(%q) = %+v, %v; want %+v", tc.args, got, err, tc.want)
		}
	}
}

func TestDotReader(t *testing.T) {
	for in, want := range map[string]string{
		"a\n.\nb\n":       "a\n",
		"a\r\n.\r\nb\r\n": "a\r\n",
		".\n":             "",
		"a\n..\nb\n":      "a\n..\nb\n",
		"a\n.b\n":         "a\n.b\n",
		"a.\n":            "a.\n",
		"a\n.":            "a\n",
		"no newline":      "no newline",
	} {
		b, err := io.ReadAll(DotReader(strings.NewReader(in)))
		if err != nil || string(b) != want {
			t.Errorf("DotReader(%q) = %q, %v; want %q", in, b, err, want)
		}
	}
	long := strings.Repeat("x", 100<<10) + "\n.\n"
	if b, _ := io.ReadAll(DotReader(strings.NewReader(long))); len(b) != 100<<10+1 {
		t.Errorf("a long line: read %d bytes, want %d", len(b), 100<<10+1)
	}
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Defaults()
	cfg.Accounts = []*config.Account{
		{Name: "support", Email: "support@example.com", SendAs: []string{"help@example.com"}, Direction: "both"},
		{Name: "sales", Email: "sales@example.com", Direction: "outgoing"},
		{Name: "inbox", Email: "inbox@example.com", Direction: "incoming"},
	}
	cfg.Sendmail.DefaultAccount = "support"
	cfg.Sendmail.Allow = map[string][]string{"nobody": {"sales"}, "@nogroup": {"support"}}
	cfg.SMTP.MaxMessageSize = 4096
	return cfg
}

func TestPrepare(t *testing.T) {
	now := time.Date(2026, 11, 30, 12, 0, 0, 0, time.UTC)
	root := Caller{UID: 0}
	nobody := Caller{UID: 65534, GID: 65534}
	stranger := Caller{UID: 4242, GID: 4242}
	for _, tc := range []struct {
		name    string
		caller  Caller
		req     Request
		msg     string
		account string
		from    string
		to      []string
		stored  string // the stored header and body
		code    int
	}{
		{name: "-t with Bcc", caller: root, req: Request{ExtractRecipients: true, Recipients: []string{"extra@y.org"}},
			msg:     "From: Help <help@example.com>\nTo: a@y.org, B <b@y.org>\nCc: a@y.org\nBcc: hidden@y.org\nSubject: s\n\nbody\n.\nend\n",
			account: "support", from: "help@example.com", to: []string{"a@y.org", "b@y.org", "hidden@y.org", "extra@y.org"},
			stored: "From: Help <help@example.com>\r\nTo: a@y.org, B <b@y.org>\r\nCc: a@y.org\r\nSubject: s\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\nbody\r\n.\r\nend\r\n"},
		{name: "default account, From and Date added", caller: root, req: Request{FullName: "Cron Daemon", Recipients: []string{"ops@y.org"}},
			msg: "Subject: cron\n\nout\n", account: "support", from: "support@example.com", to: []string{"ops@y.org"},
			stored: "Subject: cron\r\nFrom: \"Cron Daemon\" <support@example.com>\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\nout\r\n"},
		{name: "no header at all", caller: root, req: Request{From: "sales@example.com", Recipients: []string{"ops@y.org"}},
			msg: "just text\nmore\n", account: "sales", from: "sales@example.com", to: []string{"ops@y.org"},
			stored: "From: sales@example.com\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\njust text\r\nmore\r\n"},
		{name: "folded To", caller: root, req: Request{ExtractRecipients: true},
			msg: "To: a@y.org,\n b@y.org\nFrom: sales@example.com\n\nx", account: "sales", from: "sales@example.com", to: []string{"a@y.org", "b@y.org"},
			stored: "To: a@y.org,\r\n b@y.org\r\nFrom: sales@example.com\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\nx"},
		{name: "mapped user", caller: nobody, req: Request{From: "sales@example.com", Recipients: []string{"a@y.org"}}, msg: "\nx\n", account: "sales", from: "sales@example.com", to: []string{"a@y.org"},
			stored: "From: sales@example.com\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\nx\r\n"},
		{name: "mapped group, default account", caller: nobody, req: Request{Recipients: []string{"a@y.org"}}, msg: "\nx\n", account: "support", from: "support@example.com", to: []string{"a@y.org"},
			stored: "From: support@example.com\r\nDate: Mon, 30 Nov 2026 12:00:00 +0000\r\n\r\nx\r\n"},
		{name: "not in the map", caller: stranger, req: Request{Recipients: []string{"a@y.org"}}, msg: "\nx\n", code: ExNoPerm},
		{name: "mapped, other account", caller: Caller{UID: 65534, GID: 4242}, req: Request{From: "support@example.com", Recipients: []string{"a@y.org"}}, msg: "\nx\n", code: ExNoPerm},
		{name: "unknown sender", caller: root, req: Request{From: "ceo@example.com", Recipients: []string{"a@y.org"}}, msg: "\nx\n", code: ExNoUser},
		{name: "incoming-only account", caller: root, req: Request{From: "inbox@example.com", Recipients: []string{"a@y.org"}}, msg: "\nx\n", code: ExNoUser},
		{name: "local recipient", caller: root, req: Request{Recipients: []string{"root"}}, msg: "\nx\n", code: ExNoUser},
		{name: "no recipients", caller: root, req: Request{ExtractRecipients: true}, msg: "Subject: x\n\nx\n", code: ExUsage},
		{name: "bad To", caller: root, req: Request{ExtractRecipients: true}, msg: "To: <<<\n\nx\n", code: ExDataErr},
		{name: "local To with -t", caller: root, req: Request{ExtractRecipients: true}, msg: "To: root\nSubject: cron\n\nx\n", code: ExNoUser},
		{name: "too many recipients", caller: root, req: Request{Recipients: manyRecipients(MaxRecipients + 1)}, msg: "\nx\n", code: ExDataErr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := Env{Config: testConfig(t), ServiceUID: 999, Hostname: "h", Now: now}
			p, err := Prepare(env, tc.caller, &tc.req, strings.NewReader(tc.msg))
			if tc.code != 0 {
				var se *Error
				if !errors.As(err, &se) || se.Code != tc.code {
					t.Fatalf("Prepare = %v, want exit %d", err, tc.code)
				}
				return
			}
			if err != nil {
				t.Fatalf("Prepare = %v", err)
			}
			body, err := io.ReadAll(p.Body)
			if err != nil {
				t.Fatal(err)
			}
			if p.Account != tc.account || p.From != tc.from || !reflect.DeepEqual(p.To, tc.to) || string(p.Header)+string(body) != tc.stored {
				t.Errorf("Prepare = %s from %s to %q:\n%q\nwant %s from %s to %q:\n%q", p.Account, p.From, p.To, string(p.Header)+string(body), tc.account, tc.from, tc.to, tc.stored)
			}
		})
	}
}

func manyRecipients(n int) []string {
	l := make([]string, n)
	for i := range l {
		l[i] = fmt.Sprintf("r%d@y.org", i)
	}
	return l
}

func TestPrepareTooLarge(t *testing.T) {
	env := Env{Config: testConfig(t), Now: time.Now()}
	p, err := Prepare(env, Caller{}, &Request{Recipients: []string{"a@y.org"}}, strings.NewReader("Subject: x\n\n"+strings.Repeat("y", 5000)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(p.Body); !errors.Is(err, ErrTooLarge) {
		t.Errorf("reading a message over max_message_size: %v, want ErrTooLarge", err)
	}
}

// A maildrop file is whole or absent; Pickup queues it and removes it,
// renames what is no message and leaves temporary files alone.
func TestMaildrop(t *testing.T) {
	dir := t.TempDir()
	env := Env{Config: testConfig(t), Now: time.Now()}
	p, err := Prepare(env, Caller{}, &Request{Recipients: []string{"a@y.org"}}, strings.NewReader("Subject: dropped\n\nhello\n"))
	if err != nil {
		t.Fatal(err)
	}
	path, err := Drop(dir, p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir + "/maildrop"); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("maildrop directory: %v, %v; want mode 0700", fi.Mode(), err)
	}
	os.WriteFile(dir+"/maildrop/garbage", []byte("not a message"), 0o600)
	os.WriteFile(dir+"/maildrop/tmp.partial", []byte("{\"account\""), 0o600)
	var q fakeQueue
	n, err := Pickup(dir, "h", &q, discard())
	if err != nil || n != 1 || len(q.got) != 1 {
		t.Fatalf("Pickup = %d, %v; queued %d", n, err, len(q.got))
	}
	if !strings.Contains(q.got[0], "Received: by h (relayd sendmail, from userid 0)\r\n\tid Q1;") || !strings.Contains(q.got[0], "Subject: dropped\r\n") || !strings.HasSuffix(q.got[0], "\r\n\r\nhello\r\n") {
		t.Errorf("queued:\n%q", q.got[0])
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("the picked-up file is still there: %v", err)
	}
	if _, err := os.Stat(dir + "/maildrop/failed.garbage"); err != nil {
		t.Errorf("what is no message was not set aside: %v", err)
	}
	if _, err := os.Stat(dir + "/maildrop/tmp.partial"); err != nil {
		t.Errorf("a fresh temporary file was removed: %v", err)
	}
}
