// Package graph is the queue's Microsoft Graph transport, for accounts
// with transport = "graph" (tenants that switched SMTP AUTH off): each
// message goes, as stored, as base64 MIME (Content-Type: text/plain) to
// POST {graph_url}/v1.0/users/{email}/sendMail, authorized with the
// account's Graph access token through package upstream (a 401 refreshes
// once; 403 ErrorAccessDenied is needs_admin). The copy sent names exactly
// the envelope's recipients in To, Cc and Bcc, since Graph reads them
// there (envelope.go). Answers: 202 sent (Exchange queued it; later
// failures come back as bounces into the mailbox, not to relayd); 429
// and 503 with Retry-After deferred for exactly that long; other 5xx and
// network errors retried; ErrorSendAsDenied, 413 and other 4xx fail the
// message. At most provider.GraphConcurrency requests per mailbox are in
// flight, Graph's own limit.
package graph

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/mail"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/fault"
	"github.com/relayd/relayd/provider"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/upstream"
)

// Options configure the transport.
type Options struct {
	// Client sends the requests. Default: a client with a 2 minute
	// timeout.
	Client *http.Client
	Logger *slog.Logger
	// Now returns the current time, to read a Retry-After date. Default
	// time.Now.
	Now func() time.Time
}

// Transport delivers through Microsoft Graph. It is safe for use from any
// goroutine.
type Transport struct {
	opts Options
	// slots limits requests in flight per mailbox (Graph's 4), across
	// every connection and account sending from it (a fallback too).
	mu    sync.Mutex
	slots map[string]chan struct{}
}

// New returns a Graph transport.
func New(opts Options) *Transport {
	if opts.Client == nil {
		opts.Client = &http.Client{Timeout: 2 * time.Minute}
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Transport{opts: opts, slots: map[string]chan struct{}{}}
}

// Open implements queue.Transport. Graph has no session: Open gets the
// account's Graph token, so that a dead grant or a missing consent holds
// the account's mail before any message is tried.
func (t *Transport) Open(ctx context.Context, a *auth.Account) (queue.Conn, error) {
	if a.Tokens == nil {
		return nil, &health.Error{State: health.StateNeedsAdmin, Reason: health.ReasonNotConfigured,
			Advice: fmt.Sprintf("account %q: transport = \"graph\" needs an OAuth account", a.Config.Name)}
	}
	if _, err := a.Tokens.TokenFor(ctx, auth.ResourceGraph); err != nil {
		return nil, err // a condition the token source reported, or ctx's end
	}
	return &conn{t: t, a: a}, nil
}

// slot returns the semaphore of mailbox.
func (t *Transport) slot(mailbox string) chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	k := strings.ToLower(mailbox)
	s := t.slots[k]
	if s == nil {
		s = make(chan struct{}, provider.GraphConcurrency)
		t.slots[k] = s
	}
	return s
}

type conn struct {
	t *Transport
	a *auth.Account
}

func (c *conn) Reset() error { return nil }
func (c *conn) Close() error { return nil }

// Deliver implements queue.Conn.
func (c *conn) Deliver(ctx context.Context, m *queue.Message) ([]queue.Result, error) {
	cfg := c.a.Config
	all := func(r queue.Result) []queue.Result {
		rs := make([]queue.Result, len(m.To))
		for i := range rs {
			rs[i] = r
		}
		return rs
	}
	if m.Size > config.GraphMaxMessage {
		return all(queue.Result{State: queue.RcptFailed, Code: 552, Enhanced: "5.3.4",
			Reply: fmt.Sprintf("552 5.3.4 message of %d bytes is too large for Microsoft Graph, which takes about %d (its 4 MB request cap, after base64); account %q sends through Graph (transport = \"graph\")",
				m.Size, config.GraphMaxMessage, cfg.Name)}), nil
	}
	body, from, err := c.encode(m)
	if errors.Is(err, errTooLarge) {
		return all(queue.Result{State: queue.RcptFailed, Code: 552, Enhanced: "5.3.4",
			Reply: fmt.Sprintf("552 5.3.4 message too large for Microsoft Graph once its recipients were written into its header (its 4 MB request cap); account %q sends through Graph", cfg.Name)}), nil
	}
	if err != nil {
		return all(queue.Result{State: queue.RcptPending, Reply: "reading the queued message: " + err.Error()}), err
	}
	slot := c.t.slot(cfg.Email)
	select {
	case slot <- struct{}{}:
	case <-ctx.Done():
		return all(queue.Result{State: queue.RcptPending, Reply: "relayd is stopping"}), ctx.Err()
	}
	defer func() { <-slot }()
	fault.Hit("graph-send")
	endpoint := cfg.GraphURL + "/v1.0/users/" + url.PathEscape(cfg.Email) + "/sendMail"
	resp, err := upstream.Graph(ctx, c.a, func(ctx context.Context, token string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, bytes.NewReader(body))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "text/plain")
		return c.t.opts.Client.Do(req)
	})
	if err != nil {
		// An account condition or an outage, reported: nothing is known
		// of the message.
		reply := "Microsoft Graph: " + err.Error()
		if he := health.AsError(err); he != nil {
			reply = "Microsoft Graph: " + he.Advice
		}
		return all(queue.Result{State: queue.RcptPending, Reply: reply}), err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusAccepted {
		fault.Hit("after-upstream-250") // the crash test's: accepted, not yet recorded
		io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		return all(queue.Result{State: queue.RcptSent, Code: 250, Enhanced: "2.0.0",
			Reply: fmt.Sprintf("%d %s: Microsoft Graph accepted it; Exchange delivers it, and reports a later failure as a bounce into %s",
				resp.StatusCode, http.StatusText(resp.StatusCode), cfg.Email)}), nil
	}
	return all(c.classify(resp, from)), nil
}

// classify turns Graph's answer to a message into its result; from is
// the message's From field, which Graph sends as.
func (c *conn) classify(resp *http.Response, from string) queue.Result {
	ge := upstream.ReadGraphError(resp)
	said := ge.Error()
	switch {
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable:
		wait := retryAfter(resp.Header.Get("Retry-After"), c.t.opts.Now())
		r := queue.Result{State: queue.RcptPending, Code: 451, Enhanced: "4.7.0", RetryAfter: wait, Reply: said}
		if wait > 0 {
			r.Reply = fmt.Sprintf("%s; retrying after %s, as Graph asked", said, wait)
		}
		return r
	case resp.StatusCode/100 == 5:
		return queue.Result{State: queue.RcptPending, Code: 451, Enhanced: "4.4.0", Reply: said}
	case resp.StatusCode/100 == 2:
		// sendMail answers 202 and nothing else: a 200 comes from
		// something on the way (a proxy, a captive portal), not Graph.
		return queue.Result{State: queue.RcptPending, Code: 451, Enhanced: "4.4.0",
			Reply: fmt.Sprintf("%d from %s is not Microsoft Graph's answer to sendMail (202): is a proxy in the way? retrying", resp.StatusCode, c.a.Config.GraphURL)}
	case ge.Code == "ErrorSendAsDenied":
		return queue.Result{State: queue.RcptFailed, Code: 554, Enhanced: "5.7.60",
			Reply: fmt.Sprintf("554 5.7.60 %s: mailbox %s has no right to send as the message's From address (%s); grant it Send As, or send from %s",
				said, c.a.Config.Email, from, c.a.Config.Email)}
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		return queue.Result{State: queue.RcptFailed, Code: 552, Enhanced: "5.3.4",
			Reply: fmt.Sprintf("552 5.3.4 %s: the message is too large for Microsoft Graph's 4 MB request cap", said)}
	default:
		return queue.Result{State: queue.RcptFailed, Code: 554, Enhanced: "5.6.0", Reply: "554 5.6.0 " + said}
	}
}

// retryAfter reads a Retry-After value (delay seconds or an HTTP date,
// RFC 9110 §10.2.3); 0 when absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.Atoi(v); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		d := min(t.Sub(now), 24*time.Hour)
		return (d + time.Second - 1).Truncate(time.Second) // never shorter than asked
	}
	return 0
}

// encode reads the stored message, adjusts its recipient header fields to
// the envelope (envelope.go) and returns the request body, the message as
// base64, and its From address (the envelope's when it has no readable
// one), which Graph sends as.
func (c *conn) encode(m *queue.Message) ([]byte, string, error) {
	f, err := m.Open()
	if err != nil {
		return nil, "", err
	}
	defer f.Close()
	br := bufio.NewReaderSize(f, 64<<10)
	header, adj, err := adjustRecipients(br, m.To)
	if err != nil {
		return nil, "", err
	}
	from := "<" + m.From + ">"
	if h, err := mail.ReadMessage(bytes.NewReader(header)); err == nil {
		if a, err := mail.ParseAddress(h.Header.Get("From")); err == nil {
			from = a.Address
		}
	}
	if adj != nil {
		c.a.Health.Logger().Info("adjusted the recipient header fields of the copy sent to Microsoft Graph, so that it reaches exactly the envelope's recipients",
			"id", m.ID, "dropped", len(adj.dropped), "added_as_bcc", len(adj.added))
	}
	var out bytes.Buffer
	out.Grow(base64.StdEncoding.EncodedLen(int(m.Size) + 256))
	enc := base64.NewEncoder(base64.StdEncoding, &out)
	enc.Write(header)
	if _, err := io.Copy(enc, br); err != nil {
		return nil, "", err
	}
	if err := enc.Close(); err != nil {
		return nil, "", err
	}
	if out.Len() > graphMaxBody {
		return nil, "", errTooLarge
	}
	return out.Bytes(), from, nil
}

// graphMaxBody is the largest request body sent: Graph's 4 MB.
const graphMaxBody = 4_000_000

var errTooLarge = errors.New("too large for Microsoft Graph")
