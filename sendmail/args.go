package sendmail

import (
	"bufio"
	"io"
	"strings"
)

// Args is relayd sendmail's command line.
type Args struct {
	Request
	// IgnoreDots is -i or -oi: a line with a single dot does not end the
	// message.
	IgnoreDots bool
	// Config is -C FILE: relayd's configuration file; empty for the
	// default.
	Config string
	// Verbose is -v: say the queue ID on stdout.
	Verbose bool
	// Help is --help.
	Help bool
}

// withArg are the option letters that take an argument, as in Postfix's
// sendmail (getopt "B:C:F:GIL:N:O:R:UV:X:b:ce:f:h:imno:p:q:r:tvx"): the
// argument is the rest of the word (-fADDR) or the next word (-f ADDR).
const withArg = "BCFLNORVXbefhopqr"

// noArg are the option letters that take none.
const noArg = "GIUcimntvx"

// ParseArgs parses sendmail's command line. Options may be grouped
// (-ti), may come after recipients (as GNU getopt permutes them), and
// end at --. Accepted and ignored, as Postfix does: -B, -G, -L, -N, -O,
// -R, -U, -V, -X, -c, -e, -h, -m, -n, -p, -x, -bm, and -o other than -oi
// (-odi, -odb, -oem, -oee, -om, ...). Refused with ExUsage: the modes
// relayd does not have (-bs, -bp, -bd, -bi, -bv, -q, -I).
func ParseArgs(args []string) (*Args, error) {
	a := &Args{}
	for i := 0; i < len(args); i++ {
		w := args[i]
		switch {
		case w == "--":
			a.Recipients = appendAddrs(a.Recipients, args[i+1:])
			return a, nil
		case w == "--help":
			a.Help = true
			continue
		case strings.HasPrefix(w, "--"):
			return nil, errorf(ExUsage, "unknown option %s", w)
		case len(w) < 2 || w[0] != '-':
			a.Recipients = appendAddrs(a.Recipients, []string{w})
			continue
		}
		for j := 1; j < len(w); j++ {
			c := w[j]
			switch {
			case strings.IndexByte(noArg, c) >= 0:
				if err := a.flag(c); err != nil {
					return nil, err
				}
			case strings.IndexByte(withArg, c) >= 0:
				v := w[j+1:]
				if v == "" {
					if i+1 >= len(args) {
						return nil, errorf(ExUsage, "option -%c needs an argument", c)
					}
					i++
					v = args[i]
				}
				if err := a.option(c, v); err != nil {
					return nil, err
				}
				j = len(w) // the argument took the rest of the word
			default:
				return nil, errorf(ExUsage, "unknown option -%c", c)
			}
		}
	}
	return a, nil
}

// flag applies an option letter without an argument.
func (a *Args) flag(c byte) error {
	switch c {
	case 't':
		a.ExtractRecipients = true
	case 'i':
		a.IgnoreDots = true
	case 'v':
		a.Verbose = true
	case 'I':
		return errorf(ExUsage, "-I (newaliases) is not something relayd sendmail does: relayd has no aliases")
	}
	return nil // G U c m n x: accepted, no meaning here
}

// option applies an option letter with its argument v.
func (a *Args) option(c byte, v string) error {
	switch c {
	case 'f', 'r':
		a.From = strings.Trim(strings.TrimSpace(v), "<>")
	case 'F':
		a.FullName = v
	case 'C':
		a.Config = v
	case 'o':
		if v == "i" {
			a.IgnoreDots = true
		}
	case 'b':
		switch v {
		case "m":
		case "p":
			return errorf(ExUsage, "-bp (mailq): use 'relayd queue list'")
		case "s":
			return errorf(ExUsage, "-bs (SMTP on standard input) is not supported: submit over SMTP to relayd's [smtp] listener, or pipe the message to relayd sendmail")
		default:
			return errorf(ExUsage, "-b%s is not supported: relayd sendmail only submits mail (-bm)", v)
		}
	case 'q':
		return errorf(ExUsage, "-q%s (run the queue): use 'relayd queue flush'", v)
	}
	return nil // B L N O R V X e h p: accepted, no meaning here
}

// appendAddrs adds the command line's addresses, each word of which may
// be a comma-separated list, as sendmail allows.
func appendAddrs(l []string, words []string) []string {
	for _, w := range words {
		for _, addr := range strings.Split(w, ",") {
			if addr = strings.TrimSpace(addr); addr != "" {
				l = append(l, addr)
			}
		}
	}
	return l
}

// DotReader returns r up to a line holding a single dot (with LF or CRLF),
// which ends a message read by sendmail without -i; the dot line and
// what follows it are not read.
func DotReader(r io.Reader) io.Reader {
	return &dotReader{br: bufio.NewReaderSize(r, 32<<10), bol: true}
}

type dotReader struct {
	br   *bufio.Reader
	bol  bool // at the beginning of a line
	done bool
	held []byte // a line start that may be the dot line
}

func (d *dotReader) Read(p []byte) (int, error) {
	if d.done {
		return 0, io.EOF
	}
	if len(d.held) > 0 {
		n := copy(p, d.held)
		d.held = d.held[n:]
		return n, nil
	}
	if d.bol {
		// Look at the line's start without consuming what is not ours.
		b, err := d.br.Peek(3)
		switch {
		case len(b) >= 2 && b[0] == '.' && b[1] == '\n',
			len(b) >= 3 && b[0] == '.' && b[1] == '\r' && b[2] == '\n',
			len(b) == 1 && b[0] == '.' && err == io.EOF:
			d.done = true
			return 0, io.EOF
		case len(b) < 3 && err != nil && err != io.EOF:
			return 0, err
		}
	}
	line, err := d.br.ReadSlice('\n')
	n := copy(p, line)
	if n < len(line) {
		d.held = append(d.held[:0], line[n:]...)
	}
	d.bol = len(line) > 0 && line[len(line)-1] == '\n'
	if err == bufio.ErrBufferFull {
		err = nil
	}
	if n > 0 && err == io.EOF {
		err = nil
	}
	return n, err
}
