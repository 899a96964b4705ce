package proxy

import (
	"bytes"
	"math"
)

// lineWindow is how many octets of the end of a line lineTracker keeps
// across chunks: "{", up to 28 digits, "+}" and CR.
const lineWindow = 32

// A lineTracker follows the upstream-to-downstream bytes of a spliced IMAP
// session just far enough to tell whether they stop at the end of a
// response line, outside any literal: the only place where relayd may add
// a line of its own (an untagged BYE, RFC 9051 §7.1.5) without breaking
// the client's parse. A literal (RFC 9051 §4.3) is announced by "{N}" CRLF
// at the end of a line ("~{N}" for a literal8, RFC 3516; the "{N+}" of RFC
// 7888 is taken too, and a bare LF is taken for CRLF, so that whatever the
// client may read as a literal is followed as one); its N octets follow and
// the line goes on after them.
//
// Write costs one bytes.IndexByte pass over the octets of lines and
// nothing per octet of a literal, and does not allocate. The zero value
// stands at a line boundary, before the first octet. A lineTracker is not
// safe for concurrent use.
type lineTracker struct {
	literal uint64 // octets of a literal still to come
	midLine bool   // the last octet did not end a line
	// lost: an announcement relayd cannot read (its number does not fit
	// the window or a uint64) or octets that passed unseen; the stream is
	// never taken to be at a boundary again.
	lost bool
	// The end of the line segment seen so far (since the last LF or the
	// end of the last literal): its last octets, and whether there were
	// more.
	tail    [lineWindow]byte
	tailLen int
	clipped bool
}

// atBoundary reports whether the octets seen so far end a line outside any
// literal.
func (t *lineTracker) atBoundary() bool {
	return !t.lost && !t.midLine && t.literal == 0
}

// Write follows b, the next octets of the stream.
func (t *lineTracker) Write(b []byte) {
	for len(b) > 0 && !t.lost {
		if t.literal > 0 {
			n := uint64(len(b))
			if n > t.literal {
				n = t.literal
			}
			t.literal -= n
			b = b[n:]
			continue // midLine stays set: the line goes on after the literal
		}
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			t.keep(b)
			t.midLine = true
			return
		}
		n, kind := t.announced(b[:i])
		t.tailLen, t.clipped = 0, false
		b = b[i+1:]
		switch kind {
		case noLiteral:
			t.midLine = false
		case aLiteral:
			t.literal, t.midLine = n, true
		default:
			t.lost = true
		}
	}
}

// passed records n octets that went to the client unseen: the rest of a
// literal, or else the tracker is lost.
func (t *lineTracker) passed(n uint64) {
	if n <= t.literal {
		t.literal -= n
		return
	}
	t.lost = true
}

// keep adds b, octets of an unfinished line segment, to the tail.
func (t *lineTracker) keep(b []byte) {
	if len(b) >= lineWindow {
		t.clipped = t.clipped || t.tailLen > 0 || len(b) > lineWindow
		t.tailLen = copy(t.tail[:], b[len(b)-lineWindow:])
		return
	}
	if drop := t.tailLen + len(b) - lineWindow; drop > 0 {
		copy(t.tail[:], t.tail[drop:t.tailLen])
		t.tailLen -= drop
		t.clipped = true
	}
	t.tailLen += copy(t.tail[t.tailLen:], b)
}

// What a line's end announces.
const (
	noLiteral = iota
	aLiteral
	unreadable // a literal whose size relayd cannot tell
)

// announced looks at the end of the line segment that seg (the octets
// before an LF) finishes: whether it announces a literal, and of how many
// octets. It looks at the segment's last lineWindow octets only, so its
// answer does not depend on how the stream was cut into chunks.
func (t *lineTracker) announced(seg []byte) (n uint64, kind int) {
	var buf [2 * lineWindow]byte
	var w []byte
	clipped := t.clipped
	if len(seg) >= lineWindow {
		w = seg[len(seg)-lineWindow:]
		clipped = clipped || t.tailLen > 0 || len(seg) > lineWindow
	} else {
		k := copy(buf[:], t.tail[:t.tailLen])
		k += copy(buf[k:], seg)
		w = buf[:k]
		if k > lineWindow {
			w, clipped = w[k-lineWindow:], true
		}
	}
	return parseAnnouncement(w, clipped)
}

// parseAnnouncement reads `{N}` or `{N+}`, with an optional CR, at the end
// of w, the last octets of a line; clipped says the line had octets before
// w.
func parseAnnouncement(w []byte, clipped bool) (n uint64, kind int) {
	i := len(w)
	if i > 0 && w[i-1] == '\r' {
		i--
	}
	if i == 0 || w[i-1] != '}' {
		return 0, noLiteral
	}
	i--
	if i > 0 && w[i-1] == '+' {
		i--
	}
	end := i
	for i > 0 && '0' <= w[i-1] && w[i-1] <= '9' {
		i--
	}
	if i == 0 {
		if clipped {
			return 0, unreadable // the "{" may be among the octets not kept
		}
		return 0, noLiteral
	}
	if w[i-1] != '{' || i == end {
		return 0, noLiteral
	}
	for _, d := range w[i:end] {
		v := uint64(d - '0')
		if n > (math.MaxUint64-v)/10 {
			return 0, unreadable
		}
		n = n*10 + v
	}
	return n, aLiteral
}

// A wordWatch tells whether a word (lower case ASCII letters and spaces
// whose first letter occurs only there, as in "compress deflate", the one
// COMPRESS mechanism of RFC 4978) has appeared in a byte stream, in any
// case, across chunks. Not safe for concurrent use.
type wordWatch struct {
	word string
	k    int // octets of word matched so far
}

// seen follows b and reports whether the word has appeared by its end.
func (w *wordWatch) seen(b []byte) bool {
	for len(b) > 0 {
		if w.k == 0 {
			// Skip to the next possible start: message bodies
			// (APPEND) go by at memchr speed.
			i := indexFold(b, w.word[0])
			if i < 0 {
				return false
			}
			b = b[i:]
		}
		c := b[0]
		b = b[1:]
		switch c | 0x20 {
		case w.word[w.k]:
			w.k++
			if w.k == len(w.word) {
				w.k = 0
				return true
			}
		case w.word[0]:
			w.k = 1
		default:
			w.k = 0
		}
	}
	return false
}

// indexFold is the index of the first c (a lower case ASCII letter) in b,
// in either case, or -1.
func indexFold(b []byte, c byte) int {
	i := bytes.IndexByte(b, c)
	j := bytes.IndexByte(b, c&^0x20)
	switch {
	case i < 0:
		return j
	case j < 0 || i < j:
		return i
	}
	return j
}
