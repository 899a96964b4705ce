package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits of the pre-auth reader. Real LOGIN and AUTHENTICATE commands are far
// smaller; the limits keep an unauthenticated client from making relayd
// buffer much.
const (
	maxPreauthLine    = 8192
	maxPreauthID      = 1 << 20 // an ID command's parameters (RFC 2971), skipped as they stream
	maxPreauthLiteral = 4096    // also the LITERAL- bound (RFC 7888)
	maxPreauthArgs    = 8
)

// command is one pre-auth IMAP command.
type command struct {
	tag  string
	name string   // upper-cased
	args []string // atoms, quoted strings and literals, decoded
}

// protoError is a malformed command: answered with a BAD, tagged when the
// tag is known. A fatal one also ends the connection, because the input
// stream can no longer be trusted to be in step.
type protoError struct {
	tag   string
	msg   string
	fatal bool
}

func (e *protoError) Error() string { return e.msg }

// preauthReader reads commands from a not-yet-authenticated client.
type preauthReader struct {
	br *bufio.Reader
	// cont is where continuation requests ("+ ") for synchronizing literals
	// go.
	cont io.Writer
}

// readLine returns one line without its CRLF (a bare LF is accepted).
func (r *preauthReader) readLine() ([]byte, error) {
	var line []byte
	for {
		chunk, err := r.br.ReadSlice('\n')
		if len(line)+len(chunk) > maxPreauthLine {
			if tag, ok := longID(append(line, chunk...)); ok {
				return r.skipID(tag, err)
			}
			return nil, &protoError{msg: "line too long", fatal: true}
		}
		line = append(line, chunk...)
		if err == nil {
			break
		}
		if err != bufio.ErrBufferFull {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	line = bytes.TrimSuffix(line, []byte("\n"))
	line = bytes.TrimSuffix(line, []byte("\r"))
	return line, nil
}

// longID reports whether an over-long line is an ID command (compliance
// tools send long parameter lists), and returns its tag.
func longID(prefix []byte) (string, bool) {
	tag, rest, ok := bytes.Cut(prefix, []byte(" "))
	if !ok || !validTag(tag) {
		return "", false
	}
	name, _, ok := bytes.Cut(rest, []byte(" "))
	return string(tag), ok && strings.EqualFold(string(name), "ID")
}

// skipID reads the rest of an over-long ID command without keeping it, as
// Dovecot's imap-login parses ID argument by argument: relayd answers ID
// with its own and does not forward the client's (RFC 2971 §3.3). It
// returns the command as a line holding only its tag and name.
func (r *preauthReader) skipID(tag string, err error) ([]byte, error) {
	n := maxPreauthLine
	for err == bufio.ErrBufferFull {
		var chunk []byte
		chunk, err = r.br.ReadSlice('\n')
		n += len(chunk)
		if n > maxPreauthID {
			return nil, &protoError{tag: tag, msg: "ID parameters too long", fatal: true}
		}
	}
	if err != nil {
		return nil, err
	}
	return []byte(tag + " ID NIL"), nil
}

// readCommand reads one command, including any literals in it.
func (r *preauthReader) readCommand() (*command, error) {
	line, err := r.readLine()
	if err != nil {
		return nil, err
	}
	cmd := &command{}
	tag, rest, _ := bytes.Cut(line, []byte(" "))
	if len(tag) == 0 {
		return nil, &protoError{msg: "empty command line"}
	}
	if !validTag(tag) {
		return nil, &protoError{msg: "invalid tag"}
	}
	cmd.tag = string(tag)
	name, rest, _ := bytes.Cut(rest, []byte(" "))
	if len(name) == 0 {
		return nil, &protoError{tag: cmd.tag, msg: "missing command name"}
	}
	cmd.name = strings.ToUpper(string(name))
	for len(rest) > 0 {
		if len(cmd.args) == maxPreauthArgs {
			return nil, &protoError{tag: cmd.tag, msg: "too many arguments"}
		}
		var arg []byte
		var lit int
		var sync bool
		arg, rest, lit, sync, err = nextArg(rest)
		if err != nil {
			return nil, &protoError{tag: cmd.tag, msg: err.Error()}
		}
		if lit < 0 {
			cmd.args = append(cmd.args, string(arg))
			continue
		}
		// A literal: {N} or {N+} ends the line; N octets follow, then the
		// rest of the command on a new line.
		if lit > maxPreauthLiteral {
			if !sync {
				// The client has already sent the octets (RFC 7888 §4).
				return nil, &protoError{tag: cmd.tag, msg: fmt.Sprintf("literal of %d octets exceeds the limit of %d", lit, maxPreauthLiteral), fatal: true}
			}
			return nil, &protoError{tag: cmd.tag, msg: fmt.Sprintf("literal of %d octets exceeds the limit of %d", lit, maxPreauthLiteral)}
		}
		if sync {
			if _, err := io.WriteString(r.cont, "+ Ready for literal data\r\n"); err != nil {
				return nil, err
			}
		}
		buf := make([]byte, lit)
		if _, err := io.ReadFull(r.br, buf); err != nil {
			return nil, err
		}
		cmd.args = append(cmd.args, string(buf))
		if rest, err = r.readLine(); err != nil {
			return nil, err
		}
		if len(rest) > 0 {
			if rest[0] != ' ' {
				return nil, &protoError{tag: cmd.tag, msg: "expected a space after the literal"}
			}
			rest = rest[1:]
		}
	}
	return cmd, nil
}

// nextArg parses one argument at the start of b. lit >= 0 announces a
// literal of that size, which must end the line.
func nextArg(b []byte) (arg, rest []byte, lit int, sync bool, err error) {
	lit = -1
	switch b[0] {
	case '"':
		var out []byte
		for i := 1; i < len(b); i++ {
			switch c := b[i]; c {
			case '\\':
				if i+1 < len(b) && (b[i+1] == '"' || b[i+1] == '\\') {
					out = append(out, b[i+1])
					i++
					continue
				}
				return nil, nil, -1, false, errors.New("invalid escape in quoted string")
			case '"':
				rest = b[i+1:]
				if len(rest) > 0 {
					if rest[0] != ' ' {
						return nil, nil, -1, false, errors.New("expected a space after the quoted string")
					}
					rest = rest[1:]
				}
				if out == nil {
					out = []byte{}
				}
				return out, rest, -1, false, nil
			case '\r', '\n', 0:
				return nil, nil, -1, false, errors.New("invalid character in quoted string")
			default:
				out = append(out, c)
			}
		}
		return nil, nil, -1, false, errors.New("unterminated quoted string")
	case '{':
		end := bytes.IndexByte(b, '}')
		if end < 0 || end != len(b)-1 {
			return nil, nil, -1, false, errors.New("a literal must end the line")
		}
		spec := b[1:end]
		sync = true
		if n := len(spec); n > 0 && spec[n-1] == '+' {
			sync = false
			spec = spec[:n-1]
		}
		if len(spec) == 0 || len(spec) > 10 || spec[0] == '+' || spec[0] == '-' {
			return nil, nil, -1, false, errors.New("invalid literal size")
		}
		n, err := strconv.ParseUint(string(spec), 10, 32)
		if err != nil {
			return nil, nil, -1, false, errors.New("invalid literal size")
		}
		return nil, nil, int(n), sync, nil
	default:
		end := bytes.IndexByte(b, ' ')
		if end < 0 {
			end = len(b)
		}
		atom := b[:end]
		for _, c := range atom {
			if c <= ' ' || c == 0x7f || c == '(' || c == ')' || c == '{' || c == '"' || c == '%' {
				return nil, nil, -1, false, errors.New("invalid character in atom")
			}
		}
		rest = b[end:]
		if len(rest) > 0 {
			rest = rest[1:]
			if len(rest) == 0 {
				return nil, nil, -1, false, errors.New("trailing space")
			}
		}
		return atom, rest, -1, false, nil
	}
}

// validTag reports whether t is a tag: ASTRING-CHARs except "+"
// (RFC 3501 §9).
func validTag(t []byte) bool {
	for _, c := range t {
		if c <= ' ' || c >= 0x7f || c == '+' || c == '(' || c == ')' || c == '{' || c == '"' || c == '\\' || c == '%' || c == '*' {
			return false
		}
	}
	return true
}
