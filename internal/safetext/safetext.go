// Package safetext makes text that relayd did not write fit for a log
// line, the status socket, a hook's environment and a terminal: an
// identity provider's error and error_description, an upstream server's
// reply, an ID token's claims, a hook's output. Such text may be huge (an
// IdP answered with a 300 KB error_description) or hold control
// characters (ESC sequences that rewrite a terminal, CR that hides what
// came before, NUL), so it is put on one line, its control characters
// shown escaped, and bounded, once, where it enters relayd.
package safetext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Max is the most characters Line keeps: more than any useful error
// message, few enough for a log line and a hook's environment.
const Max = 500

// Line returns s bounded to Max characters (see Clip).
func Line(s string) string { return Clip(s, Max) }

// Clip returns s on one line and at most width characters long: tabs, line
// breaks and other white space become one space; other control and format
// characters (ESC, NUL, DEL, C1, bidi overrides) are shown escaped as
// \x1b or \u202e; bytes that are not UTF-8 become U+FFFD. Text cut short
// ends with "…". Only the beginning of s that fits is looked at.
func Clip(s string, width int) string {
	width = max(width, 1)
	toks, n := render(strings.TrimSpace(s), width)
	if n <= width {
		return strings.Join(toks, "")
	}
	for n > width-1 || len(toks) > 0 && toks[len(toks)-1] == " " {
		n -= utf8.RuneCountInString(toks[len(toks)-1])
		toks = toks[:len(toks)-1]
	}
	return strings.Join(toks, "") + "…"
}

// Tail returns the end of s, at most width characters of it rendered as by
// Clip, with "…" in front when anything before was left out. Only the end
// of s is looked at.
func Tail(s string, width int) string {
	width = max(width, 1)
	s = strings.TrimSpace(s)
	cut := false
	// A character takes at most 4 bytes.
	if limit := 4 * width; len(s) > limit {
		s, cut = s[len(s)-limit:], true
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
	}
	toks, n := render(s, len(s)*6)
	limit := width
	if cut {
		limit = width - 1
	}
	for n > limit || len(toks) > 0 && toks[0] == " " {
		n -= utf8.RuneCountInString(toks[0])
		toks, cut, limit = toks[1:], true, width-1
	}
	if cut {
		return "…" + strings.Join(toks, "")
	}
	return strings.Join(toks, "")
}

// render renders s's characters one string each (a run of white space is
// one " "), until they hold more than limit characters; it returns them and
// how many characters they hold.
func render(s string, limit int) (toks []string, n int) {
	space := false
	for len(s) > 0 && n <= limit {
		r, size := utf8.DecodeRuneInString(s)
		s = s[size:]
		if unicode.IsSpace(r) {
			space = true
			continue
		}
		if space && len(toks) > 0 {
			toks = append(toks, " ")
			n++
		}
		space = false
		t := escape(r)
		toks = append(toks, t)
		n += utf8.RuneCountInString(t)
	}
	return toks, n
}

// Terminal returns s, which may run over several lines, with every
// control and format character but the line break escaped (see Clip), for
// text printed on a terminal. It does not bound s.
func Terminal(s string) string {
	if !strings.ContainsFunc(s, unsafe) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == '\n' {
			b.WriteByte('\n')
			continue
		}
		if r == '\t' {
			b.WriteByte(' ')
			continue
		}
		b.WriteString(escape(r))
	}
	return b.String()
}

// unsafe reports whether r may not be printed as it is.
func unsafe(r rune) bool {
	return r == utf8.RuneError || unicode.IsControl(r) || unicode.Is(unicode.Cf, r) ||
		r == '\u2028' || r == '\u2029'
}

// escape renders r, escaped when it is unsafe.
func escape(r rune) string {
	switch {
	case r == utf8.RuneError:
		return "\uFFFD"
	case !unsafe(r):
		return string(r)
	case r < 0x100:
		return fmt.Sprintf(`\x%02x`, r)
	}
	return fmt.Sprintf(`\u%04x`, r)
}
