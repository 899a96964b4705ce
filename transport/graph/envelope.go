package graph

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"strings"
)

// Graph takes a MIME message's recipients from its To, Cc and Bcc headers
// and has no envelope. relayd must deliver to exactly the envelope's
// recipients, so the copy sent is adjusted (the spool's never is):
//   - To and Cc keep only the addresses that are envelope recipients (a
//     field left with none is removed; a field naming no address at all,
//     such as "undisclosed-recipients:;", stays);
//   - every Bcc field is removed, and one Bcc field lists the envelope
//     recipients that To and Cc do not name.
//   - a To or Cc field Graph might read differently than Go does (one
//     that does not parse, or "Cc :" with white space before the colon)
//     is removed, its envelope recipients going in Bcc.
//
// A message whose header recipients are already the envelope's goes as it
// is. Graph (Exchange) delivers to Bcc recipients of a MIME message and
// does not show them to the others, as for a message composed in Outlook:
// an assumption no fake can prove, documented in docs/providers.md.

// adjusted is the copy of a message to send.
type adjusted struct {
	header []byte // the new header block, blank line included
	// dropped are header addresses that are not envelope recipients;
	// added the envelope recipients put in Bcc.
	dropped, added []string
}

// recipientFields are the header fields Graph reads recipients from.
var recipientFields = []string{"to", "cc", "bcc"}

// adjustRecipients reads the header block of msg and returns the header
// to send so that Graph delivers to exactly envelope, or nil when msg's
// header already names exactly envelope.
func adjustRecipients(br *bufio.Reader, envelope []string) (header []byte, adj *adjusted, err error) {
	fields, raw, err := readHeader(br)
	if err != nil {
		return nil, nil, err
	}
	want := map[string]bool{}
	for _, a := range envelope {
		want[strings.ToLower(a)] = true
	}
	// A display name in a charset Go cannot decode (iso-8859-15,
	// windows-1252, ISO-2022-JP) is passed through as it is: names do
	// not decide recipients, and the field must not be lost for them.
	parser := mail.AddressParser{WordDecoder: &mime.WordDecoder{
		CharsetReader: func(_ string, input io.Reader) (io.Reader, error) { return input, nil }}}
	named := map[string]bool{}       // addresses To, Cc and Bcc name
	keptVisible := map[string]bool{} // envelope addresses To and Cc keep
	adj = &adjusted{}
	type plan struct {
		drop bool
		keep []*mail.Address
	}
	plans := make([]plan, len(fields))
	changed := false
	for i, f := range fields {
		name := strings.ToLower(f.name)
		if !isRecipientField(name) {
			continue
		}
		list, perr := parser.ParseList(f.value())
		if perr != nil || f.obsolete {
			// An address Graph might read differently than we do: the
			// field goes, and its envelope recipients go in Bcc.
			plans[i].drop, changed = true, true
			adj.dropped = append(adj.dropped, "(unparsable "+f.name+" field)")
			continue
		}
		if name == "bcc" {
			plans[i].drop = true
			for _, a := range list {
				named[strings.ToLower(a.Address)] = true
			}
			continue
		}
		if len(list) == 0 {
			continue // a group with no members: no recipient either way
		}
		for _, a := range list {
			addr := strings.ToLower(a.Address)
			named[addr] = true
			if want[addr] {
				plans[i].keep = append(plans[i].keep, a)
				keptVisible[addr] = true
			} else {
				adj.dropped = append(adj.dropped, a.Address)
				changed = true
			}
		}
		if len(plans[i].keep) == 0 {
			plans[i].drop = true
		}
	}
	for addr := range named {
		if !want[addr] {
			changed = true
		}
	}
	for _, a := range envelope {
		if !named[strings.ToLower(a)] {
			changed = true
		}
	}
	if !changed {
		return raw, nil, nil
	}
	var bcc []string
	seen := map[string]bool{}
	for _, a := range envelope {
		l := strings.ToLower(a)
		if !keptVisible[l] && !seen[l] {
			seen[l] = true
			bcc = append(bcc, a)
			if !named[l] {
				adj.added = append(adj.added, a)
			}
		}
	}
	var out bytes.Buffer
	for i, f := range fields {
		p := plans[i]
		switch {
		case !isRecipientField(strings.ToLower(f.name)) || (!p.drop && p.keep == nil):
			out.Write(f.raw)
		case p.drop:
		case len(p.keep) == countAddrs(parser, f):
			out.Write(f.raw) // nothing of it dropped: byte-exact
		default:
			writeAddressField(&out, f.name, p.keep)
		}
	}
	if len(bcc) > 0 {
		l := make([]*mail.Address, len(bcc))
		for i, a := range bcc {
			l[i] = &mail.Address{Address: a}
		}
		writeAddressField(&out, "Bcc", l)
	}
	out.WriteString("\r\n")
	return out.Bytes(), adj, nil
}

func isRecipientField(lower string) bool {
	for _, n := range recipientFields {
		if lower == n {
			return true
		}
	}
	return false
}

func countAddrs(p mail.AddressParser, f field) int {
	l, _ := p.ParseList(f.value())
	return len(l)
}

// writeAddressField writes "Name: a, b" folded at 78 columns (RFC 5322
// §2.1.1), names encoded as RFC 2047 words where they need it.
func writeAddressField(w *bytes.Buffer, name string, l []*mail.Address) {
	line := name + ":"
	for i, a := range l {
		s := " " + a.String()
		if i < len(l)-1 {
			s += ","
		}
		if len(line)+len(s) > 78 && line != name+":" {
			w.WriteString(line + "\r\n")
			line = ""
		}
		line += s
	}
	w.WriteString(line + "\r\n")
}

// field is one header field as stored: raw holds its lines with their
// line ends, folded continuation lines included.
type field struct {
	name string
	raw  []byte
	// obsolete is a name with white space before the colon (RFC 5322
	// §4.5, obs-optional): Go reads "CC :" as no Cc field at all, and
	// Graph might too.
	obsolete bool
}

// value is the field's unfolded value, less the white space (space and
// tab, RFC 5322 WSP) around it. A bare CR stays: Go's mail package, and
// perhaps Graph, does not take it for white space, and a value that
// starts with one does not parse (found by FuzzAdjustRecipients).
func (f field) value() string {
	v := string(f.raw[bytes.IndexByte(f.raw, ':')+1:])
	v = strings.NewReplacer("\r\n", "", "\n", "").Replace(v)
	return strings.Trim(v, " \t")
}

// maxHeader bounds the header block read.
const maxHeader = 1 << 20

// readHeader reads the header block up to and including the blank line
// that ends it, and returns its fields and the raw bytes.
func readHeader(br *bufio.Reader) ([]field, []byte, error) {
	var raw []byte
	type span struct {
		name       string
		start, end int
		obsolete   bool
	}
	var spans []span
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// A line longer than the buffer: keep reading it whole.
			buf := append([]byte(nil), line...)
			for err == bufio.ErrBufferFull {
				line, err = br.ReadSlice('\n')
				buf = append(buf, line...)
			}
			line = buf
		}
		if err != nil && err != io.EOF {
			return nil, nil, err
		}
		if len(raw)+len(line) > maxHeader {
			return nil, nil, fmt.Errorf("header longer than %d bytes", maxHeader)
		}
		start := len(raw)
		raw = append(raw, line...)
		trimmed := bytes.TrimRight(line, "\r\n")
		done := len(trimmed) == 0 || err == io.EOF
		switch {
		case len(trimmed) == 0:
		case (line[0] == ' ' || line[0] == '\t') && len(spans) > 0:
			spans[len(spans)-1].end = len(raw) // a folded continuation
		default:
			name, _, ok := bytes.Cut(trimmed, []byte(":"))
			if !ok {
				name = nil // not a field: kept as is, never a recipient field
			}
			trimmedName := bytes.TrimSpace(name)
			spans = append(spans, span{string(trimmedName), start, len(raw), len(trimmedName) != len(name)})
		}
		if done {
			fields := make([]field, len(spans))
			for i, sp := range spans {
				fields[i] = field{name: sp.name, raw: raw[sp.start:sp.end], obsolete: sp.obsolete}
			}
			return fields, raw, nil
		}
	}
}
