package web

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/status"
)

// pages are the console's templates, each the layout with one page.
type pages struct {
	byName map[string]*template.Template
}

var pageNames = []string{"login", "open", "index", "queue", "message", "reauthorize", "signin", "continue", "error"}

func mustParsePages() *pages {
	p := &pages{byName: map[string]*template.Template{}}
	for _, name := range pageNames {
		t := template.New("layout.html").Funcs(funcs)
		t = template.Must(t.ParseFS(templateFS, "templates/layout.html", "templates/mailboxes.html", "templates/"+name+".html"))
		p.byName[name] = t
	}
	return p
}

var funcs = template.FuncMap{
	"messages": func(n int) string { return fmt.Sprintf("%d %s", n, plural(n, "message", "messages")) },
	"datetime": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"date":     func(t time.Time) string { return t.Local().Format("2006-01-02 15:04 MST") },
	"size":     humanSize,
}

// base is what every page's layout needs.
type base struct {
	Title      string
	SignedIn   bool
	Admin      bool
	Role       string
	CSRF       string
	Flash      string
	ListenNote string
	Live       bool // the page subscribes to live updates
	Refresh    int  // seconds; the page reloads itself (a sign-in in progress)
	// MoveTo, when set, is where the page sends the browser at once (the
	// identity provider's sign-in page).
	MoveTo string
}

func (s *Server) base(title string, ss *session) base {
	b := base{Title: title, ListenNote: s.listenNote()}
	if ss != nil {
		b.SignedIn, b.Admin, b.Role, b.CSRF = true, ss.role == Admin, ss.role.String(), ss.csrf
		b.Flash = s.sessions.takeFlash(ss)
	}
	return b
}

// render writes page name with data; a template error is logged and
// answered 500.
func (s *Server) render(w http.ResponseWriter, status int, name string, data any) {
	var buf bytes.Buffer
	if err := s.pages.byName[name].Execute(&buf, data); err != nil {
		s.log.Error("web console: rendering a page failed", "page", name, "err", err)
		http.Error(w, "internal error in relayd; its log has the details", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

type messagePage struct {
	base
	Message string
}

func (s *Server) loginPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, status, "login", messagePage{base: s.base("Sign in", nil), Message: msg})
}

func (s *Server) errorPage(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, status, "error", messagePage{base: s.base(http.StatusText(status), nil), Message: msg})
}

// when is a time as the pages show it: the date, and how long ago or
// ahead in words.
type when struct {
	T        time.Time
	Relative string
}

func (s *Server) when(t time.Time) when {
	if t.IsZero() {
		return when{}
	}
	return when{T: t, Relative: relative(s.o.Now(), t)}
}

// IsZero lets templates test {{if .Since}} like a time.
func (w when) IsZero() bool { return w.T.IsZero() }

func relative(now, t time.Time) string {
	d := now.Sub(t)
	suffix := "ago"
	if d < 0 {
		d, suffix = -d, "from now"
	}
	var n int
	var unit string
	switch {
	case d < time.Minute:
		return "just now"
	case d < time.Hour:
		n, unit = int(d/time.Minute), "minute"
	case d < 48*time.Hour:
		n, unit = int(d/time.Hour), "hour"
	default:
		n, unit = int(d/(24*time.Hour)), "day"
	}
	if n != 1 {
		unit += "s"
	}
	return fmt.Sprintf("%d %s %s", n, unit, suffix)
}

func humanSize(n int64) string {
	switch {
	case n < 1<<10:
		return fmt.Sprintf("%d B", n)
	case n < 1<<20:
		return fmt.Sprintf("%.1f KB", float64(n)/(1<<10))
	default:
		return fmt.Sprintf("%.1f MB", float64(n)/(1<<20))
	}
}

// mailbox is one row of the console's table.
type mailbox struct {
	Name, Email, Provider, Direction, Transport string
	// State is the state in words; Class one of ok, warn, bad for its
	// colour (the words say it too).
	State, Class                string
	Reason, Advice              string
	Since                       when
	GrantEnds                   when
	GrantWhy, Warning           string
	Queued, Held, Failed        int
	LastDelivery                when
	LastError                   string
	LastErrorAt                 when
	CanReauthorize              bool
	NeedsAttention, AdminHolder bool
}

func (s *Server) mailbox(a *status.Account) mailbox {
	m := mailbox{Name: a.Name, Email: a.Email, Provider: a.Provider, Direction: a.Direction, Transport: a.Transport,
		State: string(a.State), Reason: a.Reason.Words(), Advice: a.Advice, Since: s.when(a.Since),
		GrantEnds: s.when(a.GrantExpires), GrantWhy: a.GrantExpiresWhy, Warning: a.Warning,
		LastError: a.LastError, LastErrorAt: s.when(a.LastErrorAt), NeedsAttention: a.NeedsAttention()}
	switch a.State {
	case health.StateOK:
		m.Class = "ok"
	case health.StateWarning, health.StateDegraded:
		m.Class = "warn"
	default:
		m.Class = "bad"
	}
	if a.NotAuthorized() {
		m.State = "not authorized yet"
	} else {
		m.State = strings.ReplaceAll(m.State, "_", " ")
	}
	if q := a.Queue; q != nil {
		m.Queued, m.Held, m.Failed = q.Queued, q.Held, q.Failed
		m.LastDelivery = s.when(q.LastDelivery)
	}
	if c := s.o.Backend.AccountConfig(a.Name); c != nil {
		m.CanReauthorize = c.OAuth() && !c.AppOnly()
	}
	return m
}

// mailboxesData is the part of the main page that live updates replace.
type mailboxesData struct {
	base
	Banner   string
	Warnings []string
	Rows     []mailbox
}

// mailboxes is the main page's mailbox section for ss (nil: without the
// session's role and CSRF token, for watch's fingerprint).
func (s *Server) mailboxes(ss *session) mailboxesData {
	st := s.o.Backend.Status()
	d := mailboxesData{base: s.base("Mailboxes", nil), Banner: st.Banner}
	if ss != nil {
		d.SignedIn, d.Admin, d.Role, d.CSRF = true, ss.role == Admin, ss.role.String(), ss.csrf
	}
	if w := st.Encryption.Warning; w != "" {
		d.Warnings = append(d.Warnings, w)
	}
	if f := st.SpoolFailing; f != nil {
		d.Warnings = append(d.Warnings, fmt.Sprintf("The spool cannot store mail: %d %s refused since %s (clients were told to try again later), the last with: %s. Free space or make the state directory writable.",
			f.Refused, plural(f.Refused, "submission was", "submissions were"), f.Since.Local().Format("2006-01-02 15:04:05"), f.LastError))
	}
	for _, l := range st.LockedOut {
		d.Warnings = append(d.Warnings, fmt.Sprintf("Local user %s is locked out after repeated failed logins until %s: find the client with the wrong password.",
			l.User, l.Until.Local().Format("15:04:05")))
	}
	for _, c := range st.Certificates {
		if c.ExpiresSoon {
			d.Warnings = append(d.Warnings, fmt.Sprintf("The %s listeners' certificate (%s) ends %s: replace %s and its key, then run relayd reload.",
				c.Protocol, c.Subject, c.NotAfter.Local().Format("2006-01-02 15:04"), c.File))
		}
	}
	for _, o := range st.OrphanedAccounts {
		d.Warnings = append(d.Warnings, fmt.Sprintf("Account %s is not configured any more and has %d queued, %d held and %d failed messages kept: add it back to the configuration and reload, or delete them with relayd queue delete %s.",
			o.Account, o.Queued, o.Held, o.Failed, o.Account))
	}
	d.Rows = make([]mailbox, len(st.Accounts))
	for i := range st.Accounts {
		d.Rows[i] = s.mailbox(&st.Accounts[i])
	}
	return d
}

func (s *Server) handleIndex(w http.ResponseWriter, r *http.Request, ss *session) {
	d := s.mailboxes(ss)
	d.base = s.base("Mailboxes", ss)
	d.Live = true
	s.render(w, http.StatusOK, "index", d)
}

// renderMailboxes renders the live part of the main page.
func (s *Server) renderMailboxes(ss *session) ([]byte, error) {
	var buf bytes.Buffer
	err := s.pages.byName["index"].ExecuteTemplate(&buf, "mailboxes", s.mailboxes(ss))
	return buf.Bytes(), err
}

// entry is one queued message as the pages show it.
type entry struct {
	*queue.Entry
	Age        string
	Recipients []string
	Held       bool
	Next       when
	Last       when
}

func (s *Server) entry(e *queue.Entry) entry {
	// Held: an admin held the message itself, so Release undoes it (a
	// hold of the whole account is released on the queue page).
	v := entry{Entry: e, Age: relative(s.o.Now(), e.Created), Next: s.when(e.NextAttempt), Last: s.when(e.LastAttempt),
		Held: e.AdminHold}
	for _, r := range e.Recipients {
		t := r.Addr
		if r.State != queue.RcptPending {
			t += " (" + string(r.State) + ")"
		}
		v.Recipients = append(v.Recipients, t)
	}
	return v
}

type queueData struct {
	base
	Mailbox mailbox
	Holds   []queue.Hold
	Entries []entry
}

func (s *Server) account(name string) *status.Account {
	st := s.o.Backend.Status()
	for i := range st.Accounts {
		if st.Accounts[i].Name == name {
			return &st.Accounts[i]
		}
	}
	return nil
}

func (s *Server) handleQueue(w http.ResponseWriter, r *http.Request, ss *session) {
	name := r.PathValue("name")
	a := s.account(name)
	if a == nil {
		s.errorPage(w, r, http.StatusNotFound, "relayd has no mailbox of that name.")
		return
	}
	q := s.o.Backend.Queue()
	d := queueData{base: s.base("Queue of "+name, ss), Mailbox: s.mailbox(a), Holds: q.Holds(name)}
	for _, e := range q.List() {
		if e.Account == name {
			d.Entries = append(d.Entries, s.entry(e))
		}
	}
	s.render(w, http.StatusOK, "queue", d)
}

type messageData struct {
	base
	Entry   entry
	Holds   []queue.Hold
	Headers string // admins only
	Cut     bool   // the headers were longer than shown
}

// maxHeaders is how much of a message's header the console shows.
const maxHeaders = 64 << 10

func (s *Server) handleMessage(w http.ResponseWriter, r *http.Request, ss *session) {
	q := s.o.Backend.Queue()
	id := r.PathValue("id")
	e, err := q.Get(id)
	if err != nil {
		s.queueError(w, r, err)
		return
	}
	d := messageData{base: s.base("Message "+id, ss), Entry: s.entry(e), Holds: q.Holds(id)}
	if ss.role == Admin {
		// A message's content is for admins, as on the status socket,
		// and its reading is logged.
		s.log.Info("web console: message headers shown", "id", id, "account", e.Account, "remote", r.RemoteAddr, "session_by", ss.origin)
		d.Headers, d.Cut, err = s.headersOf(id)
		if err != nil {
			s.queueError(w, r, err)
			return
		}
	}
	s.render(w, http.StatusOK, "message", d)
}

// headersOf reads the header section of queued message id, up to
// maxHeaders, as valid UTF-8.
func (s *Server) headersOf(id string) (string, bool, error) {
	m, err := s.o.Backend.Queue().Message(id)
	if err != nil {
		return "", false, err
	}
	defer m.Close()
	br := bufio.NewReader(io.LimitReader(m, maxHeaders+1))
	var out strings.Builder
	for {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" && (err == nil || line != "") {
			return strings.ToValidUTF8(out.String(), "\uFFFD"), false, nil
		}
		out.WriteString(strings.TrimRight(line, "\r\n"))
		out.WriteByte('\n')
		if err != nil {
			return strings.ToValidUTF8(out.String(), "\uFFFD"), out.Len() > maxHeaders, nil
		}
	}
}

func (s *Server) queueError(w http.ResponseWriter, r *http.Request, err error) {
	switch {
	case errors.Is(err, queue.ErrNotFound):
		s.errorPage(w, r, http.StatusNotFound, "That message is not in the queue (any more): it may have been delivered or deleted.")
	case errors.As(err, new(queue.ErrBusyError)):
		s.errorPage(w, r, http.StatusConflict, err.Error())
	default:
		s.log.Error("web console: queue operation failed", "err", err)
		s.errorPage(w, r, http.StatusInternalServerError, "The queue operation failed; relayd's log has the details.")
	}
}

func (s *Server) handleAccountOp(w http.ResponseWriter, r *http.Request, ss *session) {
	name, op := r.PathValue("name"), queue.Op(r.PathValue("op"))
	if s.account(name) == nil {
		s.errorPage(w, r, http.StatusNotFound, "relayd has no mailbox of that name.")
		return
	}
	q := s.o.Backend.Queue()
	n, err := q.Apply(op, name)
	if errors.Is(err, queue.ErrUnknownOp) {
		s.errorPage(w, r, http.StatusNotFound, "There is no such queue operation.")
		return
	}
	if err != nil {
		s.queueError(w, r, err)
		return
	}
	s.log.Info("queue operation", "op", string(op), "target", name, "count", n, "by", "web console", "remote", r.RemoteAddr, "session_by", ss.origin)
	flash := fmt.Sprintf("%s: %d %s.", opDone[op], n, plural(n, "message", "messages"))
	if op != queue.OpHold {
		flash += holdsText(q.Holds(name))
	}
	s.sessions.setFlash(ss, flash)
	http.Redirect(w, r, "/accounts/"+pathEscape(name)+"/queue", http.StatusSeeOther)
}

var opDone = map[queue.Op]string{queue.OpHold: "Held", queue.OpRelease: "Released", queue.OpFlush: "Sent now"}

func (s *Server) handleMessageOp(w http.ResponseWriter, r *http.Request, ss *session) {
	id, op := r.PathValue("id"), r.PathValue("op")
	q := s.o.Backend.Queue()
	e, err := q.Get(id)
	if err != nil {
		s.queueError(w, r, err)
		return
	}
	back := "/accounts/" + pathEscape(e.Account) + "/queue"
	var flash string
	switch op {
	case "hold", "release":
		_, err = q.Apply(queue.Op(op), id)
		flash = fmt.Sprintf("%s message %s.", opDone[queue.Op(op)], id)
	case "retry":
		err = q.Retry(id)
		flash = fmt.Sprintf("Message %s will be tried again now.", id)
	case "delete":
		err = q.Delete(id)
		flash = fmt.Sprintf("Deleted message %s.", id)
	default:
		s.errorPage(w, r, http.StatusNotFound, "There is no such queue operation.")
		return
	}
	if err != nil {
		s.queueError(w, r, err)
		return
	}
	s.log.Info("queue operation", "op", op, "id", id, "account", e.Account, "by", "web console", "remote", r.RemoteAddr, "session_by", ss.origin)
	if op == "release" || op == "retry" {
		flash += holdsText(q.Holds(id))
	}
	s.sessions.setFlash(ss, flash)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// holdsText says what still keeps mail from going out after a release.
func holdsText(hs []queue.Hold) string {
	var b strings.Builder
	for _, h := range hs {
		b.WriteString(" Still held: ")
		b.WriteString(h.Advice)
		if h.Release != "" {
			b.WriteString(" (" + h.Release + ")")
		}
		b.WriteString(".")
	}
	return b.String()
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

// pathEscape escapes an account name or queue ID for a path.
func pathEscape(s string) string { return url.PathEscape(s) }
