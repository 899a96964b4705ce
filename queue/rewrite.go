package queue

// The copy a fallback mailbox sends (fallback.go). In rewrite mode its
// header names the fallback's mailbox as the author, keeping the sender's
// display name, and Reply-To the sender, so that replies still reach the
// right queue; the body, and every other header field, stay byte for byte
// as stored. The spool's copy never changes.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"strings"

	"github.com/relayd/relayd/config"
)

// maxRewriteHeader bounds the header relayd reads to rewrite it.
const maxRewriteHeader = 1 << 20

// fallbackMessage is the Message that carries e through a fallback
// account whose mailbox is mailbox, in mode (config.FallbackRewrite or
// config.FallbackKeep). To is left for the caller.
func (q *Queue) fallbackMessage(e *Entry, mailbox, mode string) (*Message, error) {
	id := e.ID
	m := &Message{ID: id, From: e.From, Size: e.Size, Open: func() (io.ReadCloser, error) { return q.spool.Open(id) }}
	if mode == config.FallbackKeep {
		return m, nil
	}
	f, err := q.spool.Open(id)
	if err != nil {
		return nil, err
	}
	header, err := readHeader(bufio.NewReader(f))
	f.Close()
	if err != nil {
		return nil, fmt.Errorf("reading message %s's header to rewrite its From: %w", id, err)
	}
	rewritten := rewriteHeader(header, mailbox, e.From)
	m.From = mailbox
	m.Size = e.Size - int64(len(header)) + int64(len(rewritten))
	m.Open = func() (io.ReadCloser, error) {
		f, err := q.spool.Open(id)
		if err != nil {
			return nil, err
		}
		if _, err := io.CopyN(io.Discard, f, int64(len(header))); err != nil {
			f.Close()
			return nil, fmt.Errorf("skipping message %s's stored header: %w", id, err)
		}
		return struct {
			io.Reader
			io.Closer
		}{io.MultiReader(bytes.NewReader(rewritten), f), f}, nil
	}
	return m, nil
}

// readHeader reads a message's header up to and with the empty line that
// ends it (or the whole message when it has none).
func readHeader(br *bufio.Reader) ([]byte, error) {
	var header []byte
	for {
		line, err := br.ReadSlice('\n')
		header = append(header, line...)
		if len(header) > maxRewriteHeader {
			return nil, fmt.Errorf("header longer than %d bytes", maxRewriteHeader)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			return header, nil
		case err != nil:
			return nil, err
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			return header, nil
		}
	}
}

// headerField is one field of a header, as stored: its name and every
// line of it, line ends and all.
type headerField struct {
	name string // lower case; "" for a stray continuation line
	raw  []byte
}

// splitHeader splits a header into its fields and the empty line that
// ends it (empty when there is none). A field goes on over the lines that
// begin with a space or a tab (RFC 5322 §2.2.3, folding).
func splitHeader(header []byte) (fields []headerField, end []byte) {
	for rest := header; len(rest) > 0; {
		n := bytes.IndexByte(rest, '\n') + 1
		if n == 0 {
			n = len(rest)
		}
		line := rest[:n]
		if string(line) == "\r\n" || string(line) == "\n" {
			return fields, rest
		}
		rest = rest[n:]
		switch {
		case (line[0] == ' ' || line[0] == '\t') && len(fields) > 0:
			f := &fields[len(fields)-1]
			f.raw = append(f.raw, line...)
		default:
			name := ""
			if i := bytes.IndexByte(line, ':'); i > 0 {
				name = strings.ToLower(strings.TrimSpace(string(line[:i])))
			}
			fields = append(fields, headerField{name: name, raw: append([]byte(nil), line...)})
		}
	}
	return fields, nil
}

// value is the field's body: after the colon, unfolded (RFC 5322 §2.2.3:
// each line break before a space or tab is removed) and trimmed.
func (f headerField) value() string {
	_, v, _ := strings.Cut(string(f.raw), ":")
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// rewriteHeader returns header with From naming mailbox, keeping the
// display name of the original author, and Reply-To the original author,
// unless a Reply-To is there already (it is kept). envFrom stands in for
// the author when From is missing or cannot be read. A Sender field is
// dropped: it would claim that the account sent on the fallback's behalf,
// which the fallback's upstream refuses as it refuses Send As. Everything
// else stays byte for byte.
func rewriteHeader(header []byte, mailbox, envFrom string) []byte {
	eol := "\r\n"
	if i := bytes.IndexByte(header, '\n'); i == 0 || i > 0 && header[i-1] != '\r' {
		eol = "\n"
	}
	fields, end := splitHeader(header)
	hasReplyTo := false
	for _, f := range fields {
		if f.name == "reply-to" {
			hasReplyTo = true
		}
	}
	replyTo := func(from *headerField) string {
		if from != nil {
			if l, err := mail.ParseAddressList(from.value()); err == nil && len(l) > 0 {
				// The author as the sender wrote it: encoded words,
				// quoting and folding unchanged.
				_, v, _ := strings.Cut(string(from.raw), ":")
				return "Reply-To:" + v
			}
		}
		if envFrom == "" {
			return ""
		}
		return "Reply-To: <" + envFrom + ">" + eol
	}
	var out bytes.Buffer
	out.Grow(len(header) + 128)
	seenFrom := false
	for i := range fields {
		f := &fields[i]
		switch {
		case f.name == "sender":
			continue
		case f.name == "from" && seenFrom:
			continue // one author (RFC 5322 §3.6): the first From names it
		case f.name == "from":
			seenFrom = true
			out.WriteString(fold("From: "+fromFor(f.value(), mailbox), eol))
			if !hasReplyTo {
				out.WriteString(replyTo(f))
			}
		default:
			out.Write(f.raw)
		}
	}
	if !seenFrom {
		out.WriteString("From: <" + mailbox + ">" + eol)
		if !hasReplyTo {
			out.WriteString(replyTo(nil))
		}
	}
	out.Write(end)
	return out.Bytes()
}

// fromFor is the From value naming mailbox with the display name of the
// original From value orig: as net/mail reads it, encoded again where it
// needs to be (RFC 2047); as written when net/mail cannot read it (an
// encoded word in a charset it does not know).
func fromFor(orig, mailbox string) string {
	if l, err := mail.ParseAddressList(orig); err == nil && len(l) > 0 {
		return (&mail.Address{Name: l[0].Name, Address: mailbox}).String()
	}
	if p := rawPhrase(orig); p != "" {
		return p + " <" + mailbox + ">"
	}
	return "<" + mailbox + ">"
}

// rawPhrase is the display name of an address as written: what comes
// before its first '<' outside quotes and comments, or "".
func rawPhrase(v string) string {
	quoted, depth := false, 0
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c == '\\':
			i++
		case quoted:
			quoted = c != '"'
		case c == '"':
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case c == '<' && depth == 0:
			p := strings.TrimSpace(v[:i])
			if strings.ContainsAny(p, "\r\n,") {
				return ""
			}
			return p
		}
	}
	return ""
}

// fold writes the field line s folded at spaces so that its lines stay
// within 78 characters where it can (RFC 5322 §2.1.1), ended by eol.
func fold(s, eol string) string {
	if len(s) <= 78 {
		return s + eol
	}
	var b strings.Builder
	line := 0
	for i, w := range strings.Split(s, " ") {
		switch {
		case i == 0:
		case line+1+len(w) > 78 && line > 0:
			b.WriteString(eol + " ")
			line = 1
		default:
			b.WriteByte(' ')
			line++
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String() + eol
}
