package status

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/queue"
)

// Client talks to a running daemon over its status socket.
type Client struct {
	path string
	hc   *http.Client
}

// NewClient returns a client for the socket at path.
func NewClient(path string) *Client {
	return &Client{path: path, hc: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		}},
	}}
}

// ErrNotRunning means nothing listens on the status socket.
var ErrNotRunning = errors.New("relayd is not running")

// ErrPermission means the caller may not use the status socket, or not
// for this call.
var ErrPermission = errors.New("permission denied")

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	var rd *bytes.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://relayd"+path, rd)
	if err != nil {
		return err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		var oe *net.OpError
		if errors.As(err, &oe) && oe.Op == "dial" {
			if errors.Is(err, os.ErrPermission) {
				return fmt.Errorf("%w: this user may not use the status socket %s: join group relayd, or run as root", ErrPermission, c.path)
			}
			return fmt.Errorf("%w (no daemon answers on %s)", ErrNotRunning, c.path)
		}
		return fmt.Errorf("status socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		var e apiError
		json.NewDecoder(resp.Body).Decode(&e)
		if resp.StatusCode == http.StatusForbidden {
			return fmt.Errorf("%w: %s", ErrPermission, strings.TrimPrefix(e.Error, "permission denied: "))
		}
		if resp.StatusCode == http.StatusNotFound && e.Error != "" {
			return &NotFoundError{Msg: e.Error, unknownAccount: e.Code == codeUnknownAccount, consoleOff: e.Code == codeConsoleOff}
		}
		return fmt.Errorf("relayd answered %s: %s", resp.Status, e.Error)
	}
	switch out := out.(type) {
	case nil:
		return nil
	case io.Writer:
		_, err := io.Copy(out, resp.Body)
		return err
	default:
		return json.NewDecoder(resp.Body).Decode(out)
	}
}

// NotFoundError is the daemon's answer about an unknown account or queue
// ID.
type NotFoundError struct {
	Msg            string
	unknownAccount bool
	consoleOff     bool
}

func (e *NotFoundError) Error() string { return e.Msg }

// Is makes errors.Is(err, ErrUnknownAccount) work for unknown accounts.
// errors.Is(err, ErrConsoleOff) when the web console is off.
func (e *NotFoundError) Is(target error) bool {
	return target == ErrUnknownAccount && e.unknownAccount || target == ErrConsoleOff && e.consoleOff
}

// QueueList returns every message in the queue.
func (c *Client) QueueList(ctx context.Context) ([]*queue.Entry, error) {
	var l []*queue.Entry
	err := c.do(ctx, http.MethodGet, "/v1/queue", nil, &l)
	return l, err
}

// QueueListTo writes the queue to w as "text" or "json", as the daemon
// renders it.
func (c *Client) QueueListTo(ctx context.Context, w io.Writer, format string) error {
	return c.do(ctx, http.MethodGet, "/v1/queue?format="+url.QueryEscape(format), nil, w)
}

// QueueShow returns one message's metadata and writes the message to w.
func (c *Client) QueueShow(ctx context.Context, id string, w io.Writer) (*queue.Entry, error) {
	var e queue.Entry
	if err := c.do(ctx, http.MethodGet, "/v1/queue/"+url.PathEscape(id), nil, &e); err != nil {
		return nil, err
	}
	if w != nil {
		if err := c.do(ctx, http.MethodGet, "/v1/queue/"+url.PathEscape(id)+"/message", nil, w); err != nil {
			return nil, err
		}
	}
	return &e, nil
}

// QueueOp runs flush, hold or release on target (an account, a queue ID,
// or "" for everything with flush): how many messages it concerned, and
// the holds that still keep them.
func (c *Client) QueueOp(ctx context.Context, op, target string) (QueueResult, error) {
	var r QueueResult
	err := c.do(ctx, http.MethodPost, "/v1/queue/"+op+"?target="+url.QueryEscape(target), nil, &r)
	return r, err
}

// Reload asks the daemon to reload its configuration and waits for the
// result.
func (c *Client) Reload(ctx context.Context) error {
	err := c.do(ctx, http.MethodPost, "/v1/reload", nil, nil)
	if err != nil {
		if after, ok := strings.CutPrefix(err.Error(), "relayd answered 422 Unprocessable Entity: "); ok {
			return errors.New(after)
		}
	}
	return err
}

// QueueRetry makes a message due now, requeueing a failed one, and says
// what still holds it.
func (c *Client) QueueRetry(ctx context.Context, id string) (QueueResult, error) {
	var r QueueResult
	err := c.do(ctx, http.MethodPost, "/v1/queue/"+url.PathEscape(id)+"/retry", nil, &r)
	return r, err
}

// QueueDelete removes a message.
func (c *Client) QueueDelete(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/v1/queue/"+url.PathEscape(id), nil, nil)
}

// Status fetches the daemon's status.
func (c *Client) Status(ctx context.Context) (*Status, error) {
	var st Status
	if err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// InstallGrant hands a new grant for account name to the daemon, which
// stores it and uses it for the next login.
func (c *Client) InstallGrant(ctx context.Context, name string, g *auth.Grant) error {
	return c.do(ctx, http.MethodPost, "/v1/accounts/"+name+"/grant", g, nil)
}
