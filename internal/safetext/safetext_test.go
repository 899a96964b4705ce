package safetext

import (
	"strings"
	"testing"
	"unicode/utf8"
)

func TestClip(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"invalid_grant: AADSTS70008: expired", 500, "invalid_grant: AADSTS70008: expired"},
		{"  two\r\nlines\tand  tabs ", 500, "two lines and tabs"},
		{"red \x1b[31mtext\x1b[0m", 500, `red \x1b[31mtext\x1b[0m`},
		{"nul\x00cr\rdel\x7f", 500, `nul\x00cr del\x7f`},
		{"bidi \u202egnp.exe", 500, `bidi \u202egnp.exe`},
		{"bad \xff byte", 500, "bad \uFFFD byte"},
		{"abcdef", 6, "abcdef"},
		{"abcdefg", 6, "abcde…"},
		{"abc defg", 5, "abc…"},
		{"ab\x1bcdef", 5, "ab…"},
		{"héllo wörld", 8, "héllo w…"},
	} {
		if got := Clip(tc.in, tc.width); got != tc.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

// A 300 KB error_description becomes Max characters, and only its
// beginning is looked at.
func TestLineBoundsHugeText(t *testing.T) {
	huge := strings.Repeat("\x1b[2J AADSTS ", 300<<10/12)
	got := Line(huge)
	if n := utf8.RuneCountInString(got); n > Max || !strings.HasSuffix(got, "…") || strings.ContainsRune(got, 0x1b) {
		t.Errorf("Line(300 KB) = %d characters, %q…", n, got[:40])
	}
	if a := testing.AllocsPerRun(10, func() { Line(huge) }); a > 2*Max {
		t.Errorf("Line(300 KB) makes %.0f allocations: it looks at more than it keeps", a)
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		in    string
		width int
		want  string
	}{
		{"done\n", 10, "done"},
		{"line one\nline two\n", 10, "…line two"},
		{"0123456789", 10, "0123456789"},
		{"0123456789a", 10, "…23456789a"},
		{strings.Repeat("y\n", 1<<20) + "the end\x1b[0m\n", 20, `…y y the end\x1b[0m`},
	} {
		if got := Tail(tc.in, tc.width); got != tc.want {
			t.Errorf("Tail(%.20q…, %d) = %q, want %q", tc.in, tc.width, got, tc.want)
		}
	}
}

func TestTerminal(t *testing.T) {
	in := "account \"x\": signed in as evil\x1b]0;pwned\x07@example.com\r\nsecond line\tend"
	want := "account \"x\": signed in as evil\\x1b]0;pwned\\x07@example.com\\x0d\nsecond line end"
	if got := Terminal(in); got != want {
		t.Errorf("Terminal() = %q, want %q", got, want)
	}
	if s := "plain text\nok"; Terminal(s) != s {
		t.Errorf("Terminal changed plain text")
	}
}
