package upstream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
)

// GraphError is Microsoft Graph's error body: {"error": {"code",
// "message"}}, with the HTTP status.
type GraphError struct {
	Status  int
	Code    string // "ErrorAccessDenied", "ErrorSendAsDenied", ...
	Message string
}

func (e *GraphError) Error() string {
	return fmt.Sprintf("Microsoft Graph answered %d %s: %s", e.Status, e.Code, e.Message)
}

// ReadGraphError reads the error body of resp (at most 64 KiB), bounded
// and escaped for logs.
func ReadGraphError(resp *http.Response) *GraphError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return parseGraphError(resp.StatusCode, b)
}

func parseGraphError(status int, b []byte) *GraphError {
	var body struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	e := &GraphError{Status: status}
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = safetext.Line(body.Error.Code), safetext.Line(body.Error.Message)
	} else {
		e.Code, e.Message = http.StatusText(status), safetext.Line(string(b))
	}
	return e
}

// Graph sends one request to Microsoft Graph as account a: send is called
// with the account's Graph access token and must build and send a fresh
// request each time. A 401 refreshes the token once and sends again; a
// second 401 is the account's needs_reauth. A 403 ErrorAccessDenied is its
// needs_admin (the app lacks Mail.Send, or may not act for the mailbox).
// A request that gets no answer is an outage (graph_unreachable). These
// are reported to a.Health as health.SourceGraph and returned as a
// *health.Error (the response closed); ctx.Err() is reported to nobody.
// Any other answer is returned for the caller to read and close; a 2xx
// clears the account's Graph condition.
func Graph(ctx context.Context, a *auth.Account, send func(ctx context.Context, token string) (*http.Response, error)) (*http.Response, error) {
	src := health.SourceGraph
	if a.Tokens == nil {
		he := &health.Error{State: health.StateNeedsAdmin, Reason: health.ReasonNotConfigured,
			Advice: fmt.Sprintf("transport = \"graph\" needs an OAuth account; account %q has none: set transport = \"smtp\"", a.Config.Name)}
		a.Health.Fail(src, he)
		return nil, he
	}
	tok, err := a.Tokens.TokenFor(ctx, auth.ResourceGraph)
	if err != nil {
		return nil, tokenError(ctx, a, src, err)
	}
	for refreshed := false; ; refreshed = true {
		resp, err := send(ctx, tok)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			he := health.Unreachable(src, a.Config.GraphURL, err)
			a.Health.Fail(src, he)
			return nil, he
		}
		switch {
		case resp.StatusCode/100 == 2:
			a.Health.Succeed(src)
			return resp, nil
		case resp.StatusCode == http.StatusUnauthorized:
			ge := ReadGraphError(resp)
			resp.Body.Close()
			he := graphRefused(a, ge, refreshed)
			if refreshed {
				a.Tokens.Forget(src)
				a.Health.Fail(src, he)
				return nil, he
			}
			a.Health.Logger().Info("Microsoft Graph rejected the access token; refreshing once and retrying", "reply", ge.Error())
			if tok, err = a.Tokens.RefreshFor(ctx, auth.ResourceGraph, tok); err != nil {
				return nil, tokenError(ctx, a, src, err)
			}
		case resp.StatusCode == http.StatusNotFound:
			// The mailbox itself: a mistyped email, an unlicensed mailbox
			// (ErrorInvalidUser, MailboxNotEnabledForRESTAPI). Every
			// message would bounce, DSNs through the same mailbox too:
			// an account condition, not a message's failure.
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			ge := parseGraphError(resp.StatusCode, body)
			he := &health.Error{State: health.StateNeedsAdmin, Reason: health.ReasonGraphAccessDenied,
				Err: errors.New("Microsoft Graph said: " + ge.Error()),
				Advice: fmt.Sprintf("Microsoft Graph does not know mailbox %s (%s): check email in the configuration, and that the mailbox exists and has an Exchange Online license; then run 'relayd queue release %s'",
					a.Config.Email, ge.Code, a.Config.Name),
				Client: fmt.Sprintf("mailbox %q needs an administrator: see 'relayd status'", a.Config.Name)}
			a.Health.Fail(src, he)
			return nil, he
		case resp.StatusCode == http.StatusForbidden:
			// ErrorSendAsDenied is about one message's From: the caller's.
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			resp.Body = io.NopCloser(bytes.NewReader(body))
			ge := parseGraphError(resp.StatusCode, body)
			if ge.Code == "ErrorSendAsDenied" {
				return resp, nil
			}
			he := graphRefused(a, ge, true)
			a.Health.Fail(src, he)
			return nil, he
		default:
			return resp, nil
		}
	}
}

// graphRefused classifies Graph's 401 and 403 into the account's
// condition.
func graphRefused(a *auth.Account, ge *GraphError, refreshed bool) *health.Error {
	cfg := a.Config
	said := errors.New("Microsoft Graph said: " + ge.Error())
	if ge.Status == http.StatusForbidden {
		who := cfg.Login + "'s grant"
		if cfg.AppOnly() {
			who = "the app registration " + cfg.ClientID
		}
		return &health.Error{State: health.StateNeedsAdmin, Reason: health.ReasonGraphAccessDenied, Err: said,
			Advice: fmt.Sprintf("Microsoft Graph refused to send as %s (%s): %s lacks Mail.Send for this mailbox. "+
				"Grant the Mail.Send permission with admin consent (Entra admin center → App registrations → API permissions), "+
				"for app-only grants check that an RBAC for Applications policy lets the app use this mailbox; then run 'relayd queue release %s'",
				cfg.Email, ge.Code, who, cfg.Name),
			Client: fmt.Sprintf("mailbox %q needs an administrator: see 'relayd status'", cfg.Name)}
	}
	he := &health.Error{State: health.StateNeedsReauth, Reason: health.ReasonUpstreamRejectedToken, Err: said,
		Advice: fmt.Sprintf("Microsoft Graph refused a fresh token for %s; check that %s may send from this mailbox, then run 'relayd authorize %s'",
			cfg.Email, cfg.Login, cfg.Name),
		Client: fmt.Sprintf("mailbox %q needs reauthorization: run 'relayd authorize %s'", cfg.Name, cfg.Name)}
	if !refreshed {
		he.Advice = "Microsoft Graph refused the access token; relayd refreshes it once and tries again"
	}
	return he
}
