package sendmail

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/queue"
)

// Env is what Prepare needs besides the request.
type Env struct {
	Config *config.Config
	// ServiceUID is relayd's own user, who may send as any account, as
	// root may.
	ServiceUID int
	// Hostname names relayd in the Received: field.
	Hostname string
	Now      time.Time
}

// ErrTooLarge is the error reading a message beyond [smtp]
// max_message_size (wrapped in what queue.Submit returns).
var ErrTooLarge = errors.New("message too large")

// maxHeader bounds the header relayd reads to find the recipients and the
// sender.
const maxHeader = 256 << 10

// Prepared is a message ready for the queue.
type Prepared struct {
	Account string
	From    string
	To      []string
	// Header is the header as stored, with relayd's additions, ending in
	// the empty line; Body the rest of the message, read on demand.
	Header []byte
	Body   io.Reader
	UID    int // the caller, for the Received: field
	Now    time.Time
}

// Submission returns p for queue.Submit, with the Received: field of a
// local submission; hostname names relayd there.
// MaxRecipients caps a message's recipients, as the SMTP listener does
// (and Exchange Online: 500 per message).
const MaxRecipients = 500

func (p *Prepared) Submission(hostname string) *queue.Submission {
	return &queue.Submission{
		Account: p.Account, From: p.From, To: p.To, Body: io.MultiReader(bytes.NewReader(p.Header), p.Body),
		Trace: func(id string) string {
			// RFC 5321 §4.4, as Postfix writes it for its sendmail.
			return fmt.Sprintf("Received: by %s (relayd sendmail, from userid %d)\r\n\tid %s; %s\r\n",
				hostname, p.UID, id, p.Now.Format(time.RFC1123Z))
		},
	}
}

// Prepare reads the message's header from body, decides the account and
// the envelope for caller as the configuration says, and returns the
// message to queue. Its Body reads the rest of body, with line endings
// made CRLF, and fails with ErrTooLarge beyond [smtp] max_message_size.
// A refusal is an *Error with sendmail's exit status, or ErrTooLarge when
// the header alone is beyond max_message_size.
func Prepare(env Env, caller Caller, req *Request, body io.Reader) (*Prepared, error) {
	cfg := env.Config
	lim := &limitReader{r: body, left: cfg.SMTP.MaxMessageSize}
	br := bufio.NewReaderSize(lim, 32<<10)
	h, err := readHeader(br)
	if err != nil {
		return nil, err
	}
	var to []string
	seen := map[string]bool{}
	add := func(addr string) error {
		if !strings.Contains(addr, "@") || hasCtl(addr) {
			return errorf(ExNoUser, "recipient %q is not a full email address (user@domain): relayd does not deliver locally", addr)
		}
		if k := strings.ToLower(addr); !seen[k] {
			if len(to) == MaxRecipients {
				return errorf(ExDataErr, "more than %d recipients: split the message (relayd's SMTP listener takes %d too, as Exchange Online does)", MaxRecipients, MaxRecipients)
			}
			seen[k] = true
			to = append(to, addr)
		}
		return nil
	}
	if req.ExtractRecipients {
		for _, name := range []string{"To", "Cc", "Bcc"} {
			addrs, err := h.addresses(name)
			if err != nil {
				return nil, err
			}
			for _, a := range addrs {
				if err := add(a); err != nil {
					return nil, err
				}
			}
		}
	}
	for _, r := range req.Recipients {
		a, err := mail.ParseAddress(r)
		addr := r
		if err == nil {
			addr = a.Address
		}
		if err := add(addr); err != nil {
			return nil, err
		}
	}
	if len(to) == 0 {
		if req.ExtractRecipients {
			return nil, errorf(ExUsage, "no recipient addresses found in the message header (To:, Cc:, Bcc:) or on the command line")
		}
		return nil, errorf(ExUsage, "no recipients: name them on the command line, or use -t to read them from To:, Cc: and Bcc:")
	}

	from := req.From
	if from == "" && req.ExtractRecipients {
		if addrs, err := h.addresses("From"); err == nil && len(addrs) > 0 {
			from = addrs[0]
		}
	}
	acct, err := chooseAccount(cfg, env.ServiceUID, caller, from)
	if err != nil {
		return nil, err
	}
	if from == "" {
		from = acct.Email
	}

	// The stored copy: no Bcc:, and the fields RFC 5322 §3.6 requires.
	h.remove("Bcc")
	h.remove("Resent-Bcc")
	if !h.has("From") {
		f := from
		if req.FullName != "" {
			f = (&mail.Address{Name: req.FullName, Address: from}).String()
		}
		h.fields = append(h.fields, "From: "+f+"\r\n")
	}
	if !h.has("Date") {
		h.fields = append(h.fields, "Date: "+env.Now.Format(time.RFC1123Z)+"\r\n")
	}
	return &Prepared{
		Account: acct.Name, From: from, To: to, UID: caller.UID, Now: env.Now,
		Header: h.bytes(), Body: &crlfReader{br: br},
	}, nil
}

// chooseAccount returns the account that sends as from (its email or one
// of its send_as addresses) and that caller may use; with no from, the
// default account.
func chooseAccount(cfg *config.Config, serviceUID int, caller Caller, from string) (*config.Account, error) {
	if from == "" {
		name := cfg.Sendmail.DefaultAccount
		if name == "" {
			return nil, errorf(ExUsage, "no sender: give -f ADDRESS, or -t with a From: field, or set [sendmail] default_account")
		}
		a := account(cfg, name)
		if a == nil {
			return nil, errorf(ExConfig, "[sendmail] default_account %q is no account", name)
		}
		if !MayUse(cfg, serviceUID, caller, name) {
			return nil, notPermitted(caller, name)
		}
		return a, nil
	}
	var found []string
	for _, a := range cfg.Accounts {
		if !a.Direction.Outgoing() || !sendsAs(a, from) {
			continue
		}
		if MayUse(cfg, serviceUID, caller, a.Name) {
			return a, nil
		}
		found = append(found, a.Name)
	}
	if len(found) == 0 {
		return nil, errorf(ExNoUser, "no account sends as %s: use an account's email or one of its send_as addresses", from)
	}
	return nil, notPermitted(caller, found[0])
}

func notPermitted(caller Caller, name string) *Error {
	who := "uid " + strconv.Itoa(caller.UID)
	if u, err := user.LookupId(strconv.Itoa(caller.UID)); err == nil {
		who = "user " + u.Username
	}
	return errorf(ExNoPerm, "%s may not send as account %q: an admin grants it in [sendmail] allow (e.g. %q = [%q])",
		who, name, strings.TrimPrefix(who, "user "), name)
}

func account(cfg *config.Config, name string) *config.Account {
	for _, a := range cfg.Accounts {
		if a.Name == name {
			return a
		}
	}
	return nil
}

// sendsAs reports whether a may send as addr, by the envelope policy of
// relayd's SMTP listener: its own mailbox or one of its send_as addresses
// (case-insensitively).
func sendsAs(a *config.Account, addr string) bool {
	return strings.EqualFold(addr, a.Email) || slices.ContainsFunc(a.SendAs, func(s string) bool { return strings.EqualFold(s, addr) })
}

// MayUse reports whether caller may send as account name: root and
// relayd's own user (serviceUID) may send as any; others as [sendmail]
// allow says for their user name or for one of their groups (@group).
// Users and groups are looked up now, so a change of /etc/group applies
// to the next message.
func MayUse(cfg *config.Config, serviceUID int, caller Caller, name string) bool {
	if caller.UID == 0 || caller.UID == serviceUID {
		return true
	}
	for who, names := range cfg.Sendmail.Allow {
		if !slices.Contains(names, name) {
			continue
		}
		if matches(who, caller) {
			return true
		}
	}
	return false
}

// MaySubmit reports whether caller may send as any account at all: the
// daemon refuses everyone else before reading a message.
func MaySubmit(cfg *config.Config, serviceUID int, caller Caller) bool {
	if caller.UID == 0 || caller.UID == serviceUID {
		return true
	}
	for who, names := range cfg.Sendmail.Allow {
		if len(names) > 0 && matches(who, caller) {
			return true
		}
	}
	return false
}

// matches reports whether who, a key of [sendmail] allow (a user name or
// @group), names caller.
func matches(who string, caller Caller) bool {
	if g, ok := strings.CutPrefix(who, "@"); ok {
		grp, err := user.LookupGroup(g)
		if err != nil {
			return false
		}
		gid, err := strconv.Atoi(grp.Gid)
		return err == nil && (gid == caller.GID || slices.Contains(caller.Groups, gid))
	}
	u, err := user.Lookup(who)
	if err != nil {
		return false
	}
	uid, err := strconv.Atoi(u.Uid)
	return err == nil && uid == caller.UID
}

func hasCtl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// header is a message's header as read: its fields, each with its
// continuation lines and CRLF line endings.
type header struct {
	fields []string
}

// readHeader reads the header from br, up to and including the empty
// line that ends it. A first line that is no header field (a message
// that is all body) leaves the header empty and the line unread; a Unix
// "From " line at the start is dropped, as sendmail does.
func readHeader(br *bufio.Reader) (*header, error) {
	h := &header{}
	size := 0
	for first := true; ; first = false {
		line, err := peekLine(br)
		if err != nil && err != io.EOF {
			return nil, readErr(err)
		}
		if line == "" {
			return h, nil // the end of the message
		}
		trimmed := strings.TrimRight(line, "\r\n")
		switch {
		case first && strings.HasPrefix(line, "From "):
		case trimmed == "" && strings.HasSuffix(line, "\n"):
			br.Discard(len(line))
			return h, nil
		case isFieldStart(trimmed):
			h.fields = append(h.fields, trimmed+"\r\n")
		case (line[0] == ' ' || line[0] == '\t') && len(h.fields) > 0:
			h.fields[len(h.fields)-1] += trimmed + "\r\n"
		default:
			// Body without an empty line before it: the header ends
			// here and the line stays for the body, after the empty
			// line bytes() writes.
			return h, nil
		}
		br.Discard(len(line))
		if size += len(line); size > maxHeader {
			return nil, errorf(ExDataErr, "the message header is longer than %d KiB", maxHeader>>10)
		}
	}
}

// peekLine returns the next line of br (with its line ending) without
// consuming it; a line longer than br's buffer is an error.
func peekLine(br *bufio.Reader) (string, error) {
	for n := 1; ; n = min(n*2, br.Size()) {
		b, err := br.Peek(n)
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			return string(b[:i+1]), nil
		}
		if err != nil {
			return string(b), err
		}
		if n == br.Size() {
			return "", errorf(ExDataErr, "a header line is longer than %d KiB", br.Size()>>10)
		}
	}
}

func readErr(err error) error {
	if errors.Is(err, ErrTooLarge) || errors.As(err, new(*Error)) {
		return err
	}
	return fmt.Errorf("reading the message: %w", err)
}

// isFieldStart reports whether line starts a header field: a name of
// printable characters but colon, then a colon (RFC 5322 §2.2).
func isFieldStart(line string) bool {
	i := strings.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range []byte(line[:i]) {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

func fieldName(f string) string {
	name, _, _ := strings.Cut(f, ":")
	return name
}

func (h *header) has(name string) bool {
	return slices.ContainsFunc(h.fields, func(f string) bool { return strings.EqualFold(fieldName(f), name) })
}

func (h *header) remove(name string) {
	h.fields = slices.DeleteFunc(h.fields, func(f string) bool { return strings.EqualFold(fieldName(f), name) })
}

// addresses returns the addresses of every field called name.
func (h *header) addresses(name string) ([]string, error) {
	var out []string
	for _, f := range h.fields {
		if !strings.EqualFold(fieldName(f), name) {
			continue
		}
		_, v, _ := strings.Cut(f, ":")
		v = strings.NewReplacer("\r\n", "", "\n", "").Replace(v) // unfold
		if strings.TrimSpace(v) == "" {
			continue
		}
		l, err := mail.ParseAddressList(v)
		if err != nil {
			if bare := strings.TrimSpace(v); !strings.ContainsAny(bare, "@<>,\"") {
				// "To: root", as cron and old scripts write it: a
				// local name relayd cannot deliver to.
				return nil, errorf(ExNoUser, "recipient %q in the %s: field is not a full email address (user@domain): relayd does not deliver locally", clip(bare), name)
			}
			return nil, errorf(ExDataErr, "the %s: field is not a list of addresses (%v): %s", name, err, clip(strings.TrimSpace(v)))
		}
		for _, a := range l {
			out = append(out, a.Address)
		}
	}
	return out, nil
}

func clip(s string) string {
	if len(s) > 80 {
		return strconv.Quote(s[:80]) + "…"
	}
	return strconv.Quote(s)
}

func (h *header) bytes() []byte {
	var b bytes.Buffer
	for _, f := range h.fields {
		b.WriteString(f)
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// limitReader fails with ErrTooLarge once more than left bytes are read.
type limitReader struct {
	r    io.Reader
	left int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.left < 0 {
		return 0, ErrTooLarge
	}
	if int64(len(p)) > l.left+1 {
		p = p[:l.left+1]
	}
	n, err := l.r.Read(p)
	if int64(n) > l.left {
		n, l.left = int(l.left), -1
		return n, ErrTooLarge
	}
	l.left -= int64(n)
	return n, err
}

// crlfReader reads br with every bare LF made CRLF (RFC 5322 §2.3), so
// that a message typed with Unix line endings is stored as SMTP carries
// it.
type crlfReader struct {
	br      *bufio.Reader
	pending []byte
	buf     []byte
	prevCR  bool
}

func (c *crlfReader) Read(p []byte) (int, error) {
	if len(c.pending) == 0 {
		line, err := c.br.ReadSlice('\n')
		if len(line) == 0 {
			if err == bufio.ErrBufferFull {
				err = nil
			}
			return 0, err
		}
		c.buf = c.buf[:0]
		if line[len(line)-1] == '\n' {
			cr := len(line) >= 2 && line[len(line)-2] == '\r' || len(line) == 1 && c.prevCR
			c.buf = append(c.buf, line[:len(line)-1]...)
			if !cr {
				c.buf = append(c.buf, '\r')
			}
			c.buf = append(c.buf, '\n')
		} else {
			c.buf = append(c.buf, line...)
		}
		c.prevCR = line[len(line)-1] == '\r'
		c.pending = c.buf
		if err != nil && err != bufio.ErrBufferFull && err != io.EOF {
			return 0, err
		}
	}
	n := copy(p, c.pending)
	c.pending = c.pending[n:]
	return n, nil
}
