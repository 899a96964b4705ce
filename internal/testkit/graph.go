package testkit

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"slices"
	"strings"
	"sync"
	"time"
)

// GraphMaxRequest is Microsoft Graph's cap on a request's body.
const GraphMaxRequest = 4 << 20

// GraphConcurrency is how many requests Graph serves at once per app and
// mailbox; more answer 429.
const GraphConcurrency = 4

// Graph is a fake Microsoft Graph endpoint serving
// POST /v1.0/users/{id}/sendMail with a MIME body, as Graph does it
// (docs/providers.md): the bearer token must be one the IdP issued for
// this endpoint's resource with Mail.Send (scp for a user's own mailbox,
// roles for an app granted the mailbox); the body is base64 MIME with
// Content-Type text/plain, at most 4 MB; recipients are taken from the
// MIME's To, Cc and Bcc headers, never from elsewhere; a From other than
// the mailbox needs a Send As right (ErrorSendAsDenied); more than 4
// requests at once for one mailbox answer 429 with Retry-After. A
// request it takes answers 202 with no body and is recorded. Answers can
// be scripted (FailNext). Methods are safe for use from any goroutine.
type Graph struct {
	URL string

	idp *IdP
	srv *http.Server

	mu        sync.Mutex
	sent      []GraphMessage
	notify    chan struct{}
	failures  []graphFailure
	inflight  map[string]int
	peak      map[string]int
	sendAs    map[string]map[string]bool // mailbox → From addresses it may send as
	requests  int
	throttled int
	hold      chan struct{} // HoldRequests: requests wait until closed
}

// GraphMessage is a message Graph accepted.
type GraphMessage struct {
	// Mailbox is the {id} of the request: whose mailbox sent it.
	Mailbox string
	// From is the MIME From address.
	From string
	// To, Cc and Bcc are the addresses of those headers; Recipients all
	// of them, as Graph delivers to them.
	To, Cc, Bcc, Recipients []string
	// MIME is the decoded message as received.
	MIME []byte
	At   time.Time
}

type graphFailure struct {
	status     int
	code, msg  string
	retryAfter string
}

// StartGraph starts a fake Graph endpoint on 127.0.0.1 whose resource the
// IdP knows (scopes under its URL get Graph tokens), and stops it when the
// test ends.
func StartGraph(t TB, idp *IdP) *Graph {
	t.Helper()
	g, err := NewGraph(idp)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// NewGraph starts a fake Graph endpoint on 127.0.0.1.
func NewGraph(idp *IdP) (*Graph, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	g := &Graph{URL: "http://" + ln.Addr().String(), idp: idp, notify: make(chan struct{}, 1),
		inflight: map[string]int{}, peak: map[string]int{}, sendAs: map[string]map[string]bool{}}
	idp.registerGraph(g.URL)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1.0/users/{id}/sendMail", g.handleSendMail)
	g.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go g.srv.Serve(ln)
	return g, nil
}

// Close stops the endpoint.
func (g *Graph) Close() error { return g.srv.Close() }

// Scope is the delegated Mail.Send scope of this endpoint's resource.
func (g *Graph) Scope() string { return g.URL + "/Mail.Send" }

// Sent returns the messages accepted so far.
func (g *Graph) Sent() []GraphMessage {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.sent)
}

// Arrived is signalled (without blocking) after each accepted message.
func (g *Graph) Arrived() <-chan struct{} { return g.notify }

// WaitSent waits until n messages were accepted and returns them.
func (g *Graph) WaitSent(t TB, n int, timeout time.Duration) []GraphMessage {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		if s := g.Sent(); len(s) >= n {
			return s
		}
		select {
		case <-g.notify:
		case <-deadline.C:
			t.Fatal(fmt.Sprintf("fake Graph: %d message(s) after %s, want %d", len(g.Sent()), timeout, n))
			return nil
		}
	}
}

// Requests counts sendMail requests answered so far, and those answered
// 429 for concurrency.
func (g *Graph) Requests() (all, throttled int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.requests, g.throttled
}

// Peak is the most requests for mailbox that were in flight at once.
func (g *Graph) Peak(mailbox string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.peak[strings.ToLower(mailbox)]
}

// AllowSendAs gives mailbox the Send As right for from.
func (g *Graph) AllowSendAs(mailbox, from string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	m := strings.ToLower(mailbox)
	if g.sendAs[m] == nil {
		g.sendAs[m] = map[string]bool{}
	}
	g.sendAs[m][strings.ToLower(from)] = true
}

// FailNext makes the next n requests that pass authentication answer
// status with Graph's error body {"error": {"code", "message"}}, and
// Retry-After when retryAfter is not "" (seconds or an HTTP date).
func (g *Graph) FailNext(n, status int, code, msg, retryAfter string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for range n {
		g.failures = append(g.failures, graphFailure{status, code, msg, retryAfter})
	}
}

// HoldRequests makes requests wait, after counting them in flight, until
// the returned function is called: for tests of concurrency.
func (g *Graph) HoldRequests() (release func()) {
	g.mu.Lock()
	defer g.mu.Unlock()
	ch := make(chan struct{})
	g.hold = ch
	var once sync.Once
	return func() {
		once.Do(func() {
			g.mu.Lock()
			g.hold = nil
			g.mu.Unlock()
			close(ch)
		})
	}
}

// graphError answers as Graph does.
func graphError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{
		"code": code, "message": msg,
		"innerError": map[string]string{"date": time.Now().UTC().Format(time.RFC3339), "request-id": randHex()},
	}})
}

func (g *Graph) handleSendMail(w http.ResponseWriter, r *http.Request) {
	mailbox := strings.ToLower(r.PathValue("id"))
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		graphError(w, 401, "InvalidAuthenticationToken", "Access token is empty.")
		return
	}
	holder := g.idp.ValidateGraph(tok, g.URL)
	if holder == nil {
		graphError(w, 401, "InvalidAuthenticationToken", "Lifetime validation failed, the token is expired.")
		return
	}
	if !slices.Contains(holder.Perms, "Mail.Send") && !slices.Contains(holder.Perms, ".default") {
		graphError(w, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
		return
	}
	if holder.App != "" && !g.idp.AppMayAct(holder.App, mailbox) || holder.App == "" && !strings.EqualFold(holder.Login, mailbox) {
		graphError(w, 403, "ErrorAccessDenied", "Access is denied. Check credentials and try again.")
		return
	}

	g.mu.Lock()
	g.requests++
	if g.inflight[mailbox] >= GraphConcurrency {
		g.throttled++
		g.mu.Unlock()
		w.Header().Set("Retry-After", "1")
		graphError(w, 429, "ApplicationThrottled", "Application is over its MailboxConcurrency limit.")
		return
	}
	g.inflight[mailbox]++
	g.peak[mailbox] = max(g.peak[mailbox], g.inflight[mailbox])
	hold := g.hold
	var fail *graphFailure
	if len(g.failures) > 0 {
		fail = &g.failures[0]
		g.failures = g.failures[1:]
	}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		g.inflight[mailbox]--
		g.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	if fail != nil {
		if fail.retryAfter != "" {
			w.Header().Set("Retry-After", fail.retryAfter)
		}
		graphError(w, fail.status, fail.code, fail.msg)
		return
	}

	if r.ContentLength > GraphMaxRequest {
		graphError(w, 413, "RequestEntityTooLarge", fmt.Sprintf("The maximum request length supported is %d bytes.", GraphMaxRequest))
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, GraphMaxRequest+1))
	if err != nil {
		return
	}
	if len(body) > GraphMaxRequest {
		graphError(w, 413, "RequestEntityTooLarge", fmt.Sprintf("The maximum request length supported is %d bytes.", GraphMaxRequest))
		return
	}
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "text/plain" {
		graphError(w, 400, "RequestBodyRead", "Cannot read the request body: MIME content must be sent as base64 with Content-Type text/plain.")
		return
	}
	raw, err := base64.StdEncoding.DecodeString(string(bytes.Join(bytes.Fields(body), nil)))
	if err != nil {
		graphError(w, 400, "ErrorMimeContentInvalidBase64String", "Invalid base64 string for MIME content.")
		return
	}
	msg, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		graphError(w, 400, "ErrorMimeContentInvalid", "The MIME content is not valid.")
		return
	}
	m := GraphMessage{Mailbox: mailbox, MIME: raw, At: time.Now()}
	for _, h := range []struct {
		name string
		dst  *[]string
	}{{"To", &m.To}, {"Cc", &m.Cc}, {"Bcc", &m.Bcc}} {
		for _, v := range msg.Header[h.name] {
			l, err := mail.ParseAddressList(v)
			if err != nil {
				graphError(w, 400, "ErrorInvalidRecipients", "At least one recipient isn't valid.")
				return
			}
			for _, a := range l {
				*h.dst = append(*h.dst, a.Address)
				m.Recipients = append(m.Recipients, a.Address)
			}
		}
	}
	if len(m.Recipients) == 0 {
		graphError(w, 400, "ErrorInvalidRecipients", "At least one recipient isn't valid., A message can't be sent because it contains no recipients.")
		return
	}
	if from, err := mail.ParseAddress(msg.Header.Get("From")); err == nil {
		m.From = from.Address
	}
	if m.From != "" && !strings.EqualFold(m.From, mailbox) {
		g.mu.Lock()
		may := g.sendAs[mailbox][strings.ToLower(m.From)]
		g.mu.Unlock()
		if !may {
			graphError(w, 403, "ErrorSendAsDenied", "The user account which was used to submit this request does not have the right to send mail on behalf of the specified sending account., Cannot submit message.")
			return
		}
	}
	g.mu.Lock()
	g.sent = append(g.sent, m)
	g.mu.Unlock()
	select {
	case g.notify <- struct{}{}:
	default:
	}
	w.WriteHeader(http.StatusAccepted)
}
