package proxy

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// trackerState is what a lineTracker says after a stream: "boundary",
// "line" (inside a line), "literal N" (N octets of a literal to come) or
// "lost".
func trackerState(t *lineTracker) string {
	switch {
	case t.lost:
		return "lost"
	case t.literal > 0:
		return "literal " + strconv.FormatUint(t.literal, 10)
	case t.midLine:
		return "line"
	default:
		return "boundary"
	}
}

func TestLineTracker(t *testing.T) {
	for _, tc := range []struct {
		name, stream, want string
	}{
		{"nothing yet", "", "boundary"},
		{"a line", "* 1 EXISTS\r\n", "boundary"},
		{"lines", "* 1 EXISTS\r\n* 0 RECENT\r\na OK done\r\n", "boundary"},
		{"partial line", "* 1 FETCH (FLAGS (\\Seen", "line"},
		{"CR without LF", "* 1 EXISTS\r", "line"},
		{"bare LF ends a line", "* 1 EXISTS\n", "boundary"},
		{"literal announced", "* 1 FETCH (BODY[] {100}\r\n", "literal 100"},
		{"inside a literal", "* 1 FETCH (BODY[] {100}\r\n" + strings.Repeat("x", 40), "literal 60"},
		{"literal holding CRLF", "* 1 FETCH (BODY[] {12}\r\nSubject: a\r\n", "line"},
		{"line after a literal", "* 1 FETCH (BODY[] {5}\r\nhello)\r\n", "boundary"},
		{"after a literal, before the line ends", "* 1 FETCH (BODY[] {5}\r\nhello", "line"},
		{"empty literal", "* 1 FETCH (BODY[] {0}\r\n", "line"},
		{"empty literal, line ends", "* 1 FETCH (BODY[] {0}\r\n)\r\n", "boundary"},
		{"two literals in one line", "* 1 FETCH (BODY[1] {2}\r\nab BODY[2] {3}\r\nc", "literal 2"},
		{"two literals, line ends", "* 1 FETCH (BODY[1] {2}\r\nab BODY[2] {3}\r\ncde)\r\n", "boundary"},
		{"literal data that looks like an announcement", "* 1 FETCH (BODY[] {6}\r\n{99}\r\n)\r\n", "boundary"},
		{"announcement split by a literal's end", "* 1 FETCH (BODY[] {3}\r\nx{9}\r\n", "boundary"},
		{"LITERAL+ form", "* 1 FETCH (BODY[] {7+}\r\n", "literal 7"},
		{"literal8", "* 1 FETCH (BINARY[] ~{4}\r\n\x00\x01", "literal 2"},
		{"announcement with bare LF", "* 1 FETCH (BODY[] {3}\n", "literal 3"},
		{"braces without digits", "* OK {}\r\n", "boundary"},
		{"not at the end of the line", "* OK {5} there\r\n", "boundary"},
		{"digits without brace", "* OK 5}\r\n", "boundary"},
		{"only digits and brace", "12}\r\n", "boundary"},
		{"leading zeros", "* 1 FETCH (BODY[] {0003}\r\n", "literal 3"},
		{"largest literal", "* 1 FETCH (BODY[] {18446744073709551615}\r\n", "literal 18446744073709551615"},
		{"literal too large", "* 1 FETCH (BODY[] {18446744073709551616}\r\n", "lost"},
		{"number longer than the window", "* 1 FETCH (BODY[] {" + strings.Repeat("0", 40) + "1}\r\n", "lost"},
		{"long line, then a literal", strings.Repeat("a", 100) + " {4}\r\n", "literal 4"},
		{"lost stays lost", "* 1 FETCH (BODY[] {" + strings.Repeat("9", 40) + "}\r\n* 1 EXISTS\r\n", "lost"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Whole, and cut at every octet: the answer is the same.
			var whole lineTracker
			whole.Write([]byte(tc.stream))
			if got := trackerState(&whole); got != tc.want {
				t.Errorf("after %q: %s, want %s", tc.stream, got, tc.want)
			}
			var bytewise lineTracker
			for i := range len(tc.stream) {
				bytewise.Write([]byte{tc.stream[i]})
			}
			if got := trackerState(&bytewise); got != tc.want {
				t.Errorf("after %q an octet at a time: %s, want %s", tc.stream, got, tc.want)
			}
		})
	}
}

func TestLineTrackerPassed(t *testing.T) {
	var lt lineTracker
	lt.Write([]byte("* 1 FETCH (BODY[] {10}\r\n"))
	lt.passed(4)
	if got := trackerState(&lt); got != "literal 6" {
		t.Fatalf("after 4 of 10 octets passed unseen: %s, want literal 6", got)
	}
	lt.passed(6)
	lt.Write([]byte(")\r\n"))
	if got := trackerState(&lt); got != "boundary" {
		t.Fatalf("after the literal and the line's end: %s, want boundary", got)
	}
	lt.passed(1)
	if got := trackerState(&lt); got != "lost" {
		t.Errorf("after an octet of a line passed unseen: %s, want lost", got)
	}
}

func TestLineTrackerDoesNotAllocate(t *testing.T) {
	chunks := [][]byte{
		[]byte("* 1 FETCH (BODY[] {10}\r"), []byte("\n0123456789)\r\n* 2 FETCH (FLAGS ("),
		bytes.Repeat([]byte("a"), 100), []byte("))\r\n"),
	}
	var lt lineTracker
	if n := testing.AllocsPerRun(100, func() {
		for _, c := range chunks {
			lt.Write(c)
		}
	}); n != 0 {
		t.Errorf("Write allocates %v times per run, want 0", n)
	}
}

func TestWordWatch(t *testing.T) {
	for _, tc := range []struct {
		chunks []string
		want   bool
	}{
		{[]string{"a COMPRESS DEFLATE\r\n"}, true},
		{[]string{"a compress deflate\r\n"}, true},
		{[]string{"a COMP", "Ress DEFLATE\r\n"}, true},
		{[]string{"a CCOMPRESS deflate\r\n"}, true},
		{[]string{"a COMPRESS ", "DEFLATE\r\n"}, true},
		{[]string{"a COMPRES\r\n", "b NOOP\r\n"}, false},
		{[]string{"a SELECT INBOX\r\n", "b IDLE\r\n"}, false},
		// Mail that speaks of compression does not turn tracking off.
		{[]string{"a APPEND INBOX {40}\r\n", "please compress the attachments\r\n"}, false},
		{[]string{"a SEARCH TEXT compress\r\n"}, false},
	} {
		w := wordWatch{word: "compress deflate"}
		got := false
		for _, c := range tc.chunks {
			got = got || w.seen([]byte(c))
		}
		if got != tc.want {
			t.Errorf("seen(%q) = %v, want %v", tc.chunks, got, tc.want)
		}
	}
}

// refAnnouncement is the plain reading of RFC 9051 §4.3 the tracker is
// checked against: a line ending in {N} or {N+}, CR optional.
var refAnnouncement = regexp.MustCompile(`\{([0-9]+)\+?\}\r?$`)

// longDigits is a number the tracker may give up on.
var longDigits = regexp.MustCompile(`[0-9]{20}`)

// refState follows stream with whole lines in hand, as the reference for
// the fuzz target: "boundary", "line", "literal N".
func refState(stream []byte) string {
	var literal uint64
	midLine := false
	seg := []byte{} // the line segment since the last LF or literal
	for len(stream) > 0 {
		if literal > 0 {
			n := min(uint64(len(stream)), literal)
			literal -= n
			stream = stream[n:]
			continue
		}
		c := stream[0]
		stream = stream[1:]
		if c != '\n' {
			seg = append(seg, c)
			midLine = true
			continue
		}
		m := refAnnouncement.FindSubmatch(seg)
		seg = seg[:0]
		midLine = false
		if m != nil {
			n, err := strconv.ParseUint(string(m[1]), 10, 64)
			if err != nil {
				return "lost"
			}
			literal, midLine = n, true
		}
	}
	switch {
	case literal > 0:
		return "literal " + strconv.FormatUint(literal, 10)
	case midLine:
		return "line"
	}
	return "boundary"
}

// The tracker agrees with the plain reading however the stream is cut,
// except that it may give up ("lost") on numbers too long for its window,
// and it never says "boundary" where the plain reading does not.
func FuzzLineTracker(f *testing.F) {
	for _, s := range []string{
		"* 1 EXISTS\r\n",
		"* 1 FETCH (BODY[] {100}\r\n" + strings.Repeat("x", 40),
		"* 1 FETCH (BODY[] {12}\r\nSubject: a\r\n)\r\n",
		"* 1 FETCH (BODY[1] {2}\r\nab BODY[2] {3}\r\ncde)\r\n",
		"* 1 FETCH (BODY[] {6}\r\n{99}\r\n)\r\n",
		"* 1 FETCH (BINARY[] ~{4}\r\n\x00\x01\r\n)\r\n",
		"* 1 FETCH (BODY[] {0}\r\n)\r\n* 2 FETCH (BODY[] {7+}\r\n",
		"* OK {5} there\r\n12}\r\n{}\r\n",
		"* 1 FETCH (BODY[] {" + strings.Repeat("0", 40) + "1}\r\n",
		"* 1 FETCH (BODY[] {18446744073709551616}\r\n",
	} {
		f.Add([]byte(s), uint8(7))
	}
	f.Fuzz(func(t *testing.T, stream []byte, cut uint8) {
		var whole lineTracker
		whole.Write(stream)
		got := trackerState(&whole)
		var chunked lineTracker
		step := int(cut%64) + 1
		for b := stream; len(b) > 0; {
			n := min(step, len(b))
			chunked.Write(b[:n])
			b = b[n:]
		}
		if c := trackerState(&chunked); c != got {
			t.Fatalf("%q whole: %s; in chunks of %d: %s", stream, got, step, c)
		}
		want := refState(stream)
		if got == "lost" && !longDigits.Match(stream) {
			t.Fatalf("%q: lost, want %s (numbers of fewer than 20 digits fit the window)", stream, want)
		}
		if got != want && got != "lost" {
			t.Fatalf("%q: %s, want %s", stream, got, want)
		}
	})
}
