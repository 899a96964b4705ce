package proxy

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strings"
	"testing"
)

func parse(in string) (*command, string, error) {
	var cont bytes.Buffer
	r := &preauthReader{br: bufio.NewReader(strings.NewReader(in)), cont: &cont}
	cmd, err := r.readCommand()
	return cmd, cont.String(), err
}

func TestReadCommand(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     *command
		cont     string
	}{
		{"atoms", "a1 LOGIN joe secret\r\n", &command{"a1", "LOGIN", []string{"joe", "secret"}}, ""},
		{"lower case, bare LF", "x login joe secret\n", &command{"x", "LOGIN", []string{"joe", "secret"}}, ""},
		{"no args", "a CAPABILITY\r\n", &command{"a", "CAPABILITY", nil}, ""},
		{"quoted", `a LOGIN "joe@example.com" "p a\"ss\\w"` + "\r\n", &command{"a", "LOGIN", []string{"joe@example.com", `p a"ss\w`}}, ""},
		{"empty quoted", `a LOGIN "" ""` + "\r\n", &command{"a", "LOGIN", []string{"", ""}}, ""},
		{"sync literal", "a LOGIN {3}\r\njoe {6}\r\nse{c}t\r\n", &command{"a", "LOGIN", []string{"joe", "se{c}t"}}, "+ Ready for literal data\r\n+ Ready for literal data\r\n"},
		{"non-sync literal", "a LOGIN {3+}\r\njoe \"pw\"\r\n", &command{"a", "LOGIN", []string{"joe", "pw"}}, ""},
		{"literal with CRLF inside", "a LOGIN joe {4+}\r\na\r\nb\r\n", &command{"a", "LOGIN", []string{"joe", "a\r\nb"}}, ""},
		{"SASL-IR", "a AUTHENTICATE PLAIN AGpvZQBwdw==\r\n", &command{"a", "AUTHENTICATE", []string{"PLAIN", "AGpvZQBwdw=="}}, ""},
		{"max literal", "a LOGIN joe {4096+}\r\n" + strings.Repeat("x", 4096) + "\r\n", &command{"a", "LOGIN", []string{"joe", strings.Repeat("x", 4096)}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd, cont, err := parse(tc.in)
			if err != nil {
				t.Fatalf("readCommand() = %v", err)
			}
			if !reflect.DeepEqual(cmd, tc.want) {
				t.Errorf("readCommand() = %#v, want %#v", cmd, tc.want)
			}
			if cont != tc.cont {
				t.Errorf("continuations = %q, want %q", cont, tc.cont)
			}
		})
	}
}

func TestReadCommandErrors(t *testing.T) {
	for _, tc := range []struct {
		name, in, tag, msg string
		fatal              bool
	}{
		{"empty line", "\r\n", "", "empty command line", false},
		{"bad tag", "a+b LOGIN x y\r\n", "", "invalid tag", false},
		{"no command", "a1\r\n", "a1", "missing command name", false},
		{"unterminated quote", `a LOGIN "joe` + "\r\n", "a", "unterminated quoted string", false},
		{"bad escape", `a LOGIN "jo\e" x` + "\r\n", "a", "invalid escape in quoted string", false},
		{"junk after quote", `a LOGIN "joe"x y` + "\r\n", "a", "expected a space after the quoted string", false},
		{"literal not at end", "a LOGIN {3} x\r\n", "a", "a literal must end the line", false},
		{"literal size", "a LOGIN {abc}\r\n", "a", "invalid literal size", false},
		{"negative literal", "a LOGIN {-1}\r\n", "a", "invalid literal size", false},
		{"huge sync literal", "a LOGIN {99999}\r\n", "a", "literal of 99999 octets exceeds the limit of 4096", false},
		{"huge non-sync literal", "a LOGIN {4097+}\r\n", "a", "literal of 4097 octets exceeds the limit of 4096", true},
		{"too many args", "a X 1 2 3 4 5 6 7 8 9\r\n", "a", "too many arguments", false},
		{"trailing space", "a LOGIN x y \r\n", "a", "trailing space", false},
		{"paren", "a LOGIN (x) y\r\n", "a", "invalid character in atom", false},
		{"long line", "a LOGIN " + strings.Repeat("x", 9000) + "\r\n", "", "line too long", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := parse(tc.in)
			var pe *protoError
			if !errors.As(err, &pe) {
				t.Fatalf("readCommand() = %v, want a protoError", err)
			}
			if pe.tag != tc.tag || pe.msg != tc.msg || pe.fatal != tc.fatal {
				t.Errorf("readCommand() = {tag %q msg %q fatal %v}, want {%q %q %v}", pe.tag, pe.msg, pe.fatal, tc.tag, tc.msg, tc.fatal)
			}
		})
	}
}

func TestReadCommandEOF(t *testing.T) {
	for _, in := range []string{"", "a LOGIN", "a LOGIN {5}\r\nab"} {
		if _, _, err := parse(in); err == nil || errors.As(err, new(*protoError)) {
			t.Errorf("readCommand(%q) = %v, want an I/O error", in, err)
		}
	}
	if _, _, err := parse("a LOGIN"); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated line: %v, want ErrUnexpectedEOF", err)
	}
}

// Several commands in one buffer are read one by one, leaving the rest
// buffered for the splice.
func TestReadCommandPipelined(t *testing.T) {
	in := "a LOGIN joe pw\r\nb SELECT INBOX\r\n"
	br := bufio.NewReader(strings.NewReader(in))
	r := &preauthReader{br: br, cont: io.Discard}
	cmd, err := r.readCommand()
	if err != nil || cmd.name != "LOGIN" {
		t.Fatalf("readCommand() = %v, %v", cmd, err)
	}
	rest, _ := br.Peek(br.Buffered())
	if string(rest) != "b SELECT INBOX\r\n" {
		t.Errorf("buffered after LOGIN = %q", rest)
	}
}

func FuzzReadCommand(f *testing.F) {
	for _, s := range []string{
		"a LOGIN joe secret\r\n", `a LOGIN "j\"oe" {3}` + "\r\nabc\r\n", "a AUTHENTICATE PLAIN AGpvZQBwdw==\r\n",
		"a LOGIN {4+}\r\nabcd {1}\r\nx\r\n", "* BAD\r\n", "a\r\n", "{5}\r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var cont bytes.Buffer
		r := &preauthReader{br: bufio.NewReaderSize(bytes.NewReader(b), 1024), cont: &cont}
		for i := 0; i < 16; i++ {
			cmd, err := r.readCommand()
			if err != nil {
				var pe *protoError
				if errors.As(err, &pe) && !pe.fatal {
					continue
				}
				return
			}
			if cmd.tag == "" || cmd.name == "" || len(cmd.args) > maxPreauthArgs {
				t.Fatalf("readCommand() = %#v", cmd)
			}
			for _, a := range cmd.args {
				if len(a) > maxPreauthLine+maxPreauthLiteral {
					t.Fatalf("argument of %d bytes", len(a))
				}
			}
		}
	})
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// A pre-auth ID with a parameter list longer than the line limit (about
// 31 KB, as compliance test tools send) is answered; other commands keep
// the limit.
func TestLongPreauthID(t *testing.T) {
	var params strings.Builder
	params.WriteString("a1 ID (")
	for i := 0; params.Len() < 31<<10; i++ {
		fmt.Fprintf(&params, `"key%d" "value %d with some padding to make it long" `, i, i)
	}
	params.WriteString(`"last" "x")` + "\r\n")
	in := params.String() + "a2 NOOP\r\n" + "a3 LOGIN " + strings.Repeat("x", 9000) + "\r\n"
	var cont bytes.Buffer
	r := &preauthReader{br: bufio.NewReaderSize(strings.NewReader(in), 1024), cont: &cont}
	cmd, err := r.readCommand()
	if err != nil || cmd.tag != "a1" || cmd.name != "ID" {
		t.Fatalf("long ID = %+v, %v", cmd, err)
	}
	if cmd, err := r.readCommand(); err != nil || cmd.name != "NOOP" {
		t.Fatalf("after the long ID: %+v, %v (out of step)", cmd, err)
	}
	var pe *protoError
	if _, err := r.readCommand(); !errors.As(err, &pe) || !pe.fatal {
		t.Errorf("a long LOGIN = %v, want the line limit", err)
	}
}
