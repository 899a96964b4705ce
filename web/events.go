package web

import (
	"bytes"
	"io"
	"net/http"
	"time"
)

// handleEvents streams the main page's mailbox section as server-sent
// events (the "mailboxes" event, whose data is the section's HTML)
// whenever it changes (watch), so that an open page shows a state change
// within about UpdateInterval; nothing is sent while nothing changes. The page works without it (no JavaScript: a
// reload). The stream ends with an "expired" event when the session
// ends, and at Shutdown; the browser reconnects on its own otherwise.
func (s *Server) handleEvents(w http.ResponseWriter, r *http.Request, ss *session) {
	if !s.sessions.openStream(ss) {
		http.Error(w, "this session has too many live-update streams open (close other console tabs)", http.StatusTooManyRequests)
		return
	}
	defer s.sessions.closeStream(ss)
	// Readers get half of the streams at most, so that they cannot take
	// every one from the admins.
	if !s.takeStream(ss.role) {
		http.Error(w, "too many live-update streams are open", http.StatusServiceUnavailable)
		return
	}
	defer s.releaseStream(ss.role)
	rc := http.NewResponseController(w)
	rc.SetReadDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	send := func(event string, data []byte) bool {
		rc.SetWriteDeadline(time.Now().Add(s.o.RequestTimeout))
		var b bytes.Buffer
		b.WriteString("event: " + event + "\n")
		// An event stream ends a line at CR, LF or CRLF (HTML, "Server-sent
		// events", 9.2.5): every one of them must start a new data:
		// field, or text in the page (a user name a client sent) could
		// start an event of its own.
		data = bytes.ReplaceAll(data, []byte("\r\n"), []byte("\n"))
		data = bytes.ReplaceAll(data, []byte("\r"), []byte("\n"))
		for _, line := range bytes.Split(data, []byte("\n")) {
			b.WriteString("data: ")
			b.Write(line)
			b.WriteByte('\n')
		}
		b.WriteByte('\n')
		if _, err := w.Write(b.Bytes()); err != nil {
			return false
		}
		if rc.Flush() != nil {
			return false
		}
		// No deadline while waiting: over HTTP/2 a pending write
		// deadline resets the stream even when nothing is written.
		rc.SetWriteDeadline(time.Time{})
		return true
	}
	// retry: the browser reconnects after 2 s if the stream breaks.
	rc.SetWriteDeadline(time.Now().Add(s.o.RequestTimeout))
	if _, err := io.WriteString(w, "retry: 2000\n\n"); err != nil || rc.Flush() != nil {
		return
	}
	rc.SetWriteDeadline(time.Time{})
	if !send("hello", nil) {
		return
	}
	unsubscribe := s.watch.subscribe()
	defer unsubscribe()
	var last []byte
	// A stream ends after a while even with the session alive, so that a
	// forgotten tab does not hold a connection for ever; the browser
	// opens a new one.
	end := time.NewTimer(10 * time.Minute)
	defer end.Stop()
	// Sessions end without telling: look now and then.
	alive := time.NewTicker(time.Second)
	defer alive.Stop()
	for {
		_, changed := s.watch.next()
		html, err := s.renderMailboxes(ss)
		if err != nil {
			s.log.Error("web console: rendering the live update failed", "err", err)
			return
		}
		if !bytes.Equal(html, last) {
			if !send("mailboxes", html) {
				return
			}
			last = html
		}
		for waiting := true; waiting; {
			select {
			case <-r.Context().Done():
				return
			case <-end.C:
				return
			case <-alive.C:
				if !s.sessions.alive(ss) {
					send("expired", nil)
					return
				}
			case <-changed:
				waiting = false
			}
		}
	}
}
