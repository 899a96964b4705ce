// Package upstream logs an account in at its mail provider, for every
// protocol, in one place: it takes the account's current access token (or
// its password), authenticates a fresh connection, and when the server
// refuses the token it refreshes the token once and tries again on a new
// connection (a server may drop the connection after a refusal, and
// Exchange keeps refusing on the one that saw the old token). Whatever the
// outcome, it is reported to the account's health (package health) and
// comes back classified: nil or an account condition (*health.Error). A
// server that cannot be reached, and a connection lost during AUTH before
// the server refused anything, are an outage (health.Unreachable,
// Error.Outage), for IMAP as for SMTP.
//
// The IMAP and POP3 proxies and the queue's SMTP transport call Login with
// a dial function of their protocol; Microsoft Graph has its own (graph.go).
// The one classifier of refusals for every protocol is Classify.
package upstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
)

// Conn is a connection to an upstream server that has greeted and is ready
// to authenticate (TLS and STARTTLS done).
type Conn interface {
	// Auth runs the SASL mechanism mech (auth.XOAUTH2 or "PLAIN") with the
	// initial response ir, answering an error challenge with an empty
	// response (RFC 7628 §3.2.3, Google's XOAUTH2). A final refusal by the
	// server is a *Refusal; any other error is about the connection.
	Auth(mech string, ir []byte) error
	Close() error
}

// Refusal is a server's final reply refusing AUTH.
type Refusal struct {
	// Code and Enhanced are an SMTP reply's codes ("5.7.139"); zero and
	// empty for IMAP and POP3.
	Code     int
	Enhanced string
	// Text is the reply as the server sent it, for the log: an IMAP
	// "NO [AUTHENTICATIONFAILED] ...", an SMTP "535 5.7.8 ...".
	Text string
}

func (r *Refusal) Error() string { return "upstream refused AUTH: " + safetext.Line(r.Text) }

// Login dials with dial and logs conn in as the account a, at the server
// named host (for messages), seen as src (health.SourceIMAP,
// health.SourceSMTP, ...). On success the account's src condition is
// cleared. Errors:
//   - a *health.Error, already reported to a.Health: the token source's
//     condition, the server's refusal classified by Classify, or an outage
//     (dialing, TLS or the greeting failed, or the connection was lost
//     during AUTH before any refusal; Error.Outage);
//   - ctx.Err(), reported to nobody, when ctx ended (relayd stopping).
func Login[C Conn](ctx context.Context, a *auth.Account, src health.Source, host string, dial func(context.Context) (C, error)) (C, error) {
	var zero C
	cfg := a.Config
	if a.Tokens == nil {
		c, authErr, err := attempt(ctx, a, src, dial, "PLAIN", []byte("\x00"+cfg.Login+"\x00"+a.Password))
		if err != nil || authErr == nil {
			return c, err
		}
		return zero, refused(ctx, a, src, host, authErr, false)
	}
	tok, err := a.Tokens.Token(ctx)
	if err != nil {
		return zero, tokenError(ctx, a, src, err)
	}
	c, authErr, err := attempt(ctx, a, src, dial, auth.XOAUTH2, auth.XOAUTH2Response(cfg.Email, tok))
	if err != nil || authErr == nil {
		return c, err
	}
	var r *Refusal
	if !errors.As(authErr, &r) {
		return zero, lost(ctx, a, src, host, authErr)
	}
	if he := Classify(a, host, r, false); he.Reason != health.ReasonUpstreamRejectedToken {
		a.Health.Fail(src, he) // not about the token: a new one will not help
		return zero, he
	}
	a.Health.Logger().Info("upstream rejected the access token; refreshing once and retrying on a new connection",
		"upstream", host, "reply", safetext.Line(r.Text))
	if tok, err = a.Tokens.Refresh(ctx, tok); err != nil {
		return zero, tokenError(ctx, a, src, err)
	}
	c, authErr, err = attempt(ctx, a, src, dial, auth.XOAUTH2, auth.XOAUTH2Response(cfg.Email, tok))
	if err != nil || authErr == nil {
		return c, err
	}
	if !errors.As(authErr, &r) {
		// The server refused this account's token a moment ago and now
		// drops the connection during AUTH: that is about the account.
		he := Classify(a, host, r, true)
		he.Err = fmt.Errorf("connection lost during AUTH after %q: %w", safetext.Line(r.Text), authErr)
		a.Tokens.Forget(src)
		a.Health.Fail(src, he)
		return zero, he
	}
	return zero, refused(ctx, a, src, host, r, true)
}

// attempt dials a fresh connection and runs one AUTH on it. It returns the
// logged-in connection (the account's src condition cleared), or the
// AUTH's error in authErr (the connection closed), or in err a failure to
// dial, already reported as an outage.
func attempt[C Conn](ctx context.Context, a *auth.Account, src health.Source, dial func(context.Context) (C, error), mech string, ir []byte) (c C, authErr, err error) {
	var zero C
	if c, err = open(ctx, a, src, dial); err != nil {
		return zero, nil, err
	}
	if authErr = c.Auth(mech, ir); authErr != nil {
		c.Close()
		return zero, authErr, nil
	}
	a.Health.Succeed(src)
	return c, nil, nil
}

// open dials; a failure is the account's outage, reported.
func open[C Conn](ctx context.Context, a *auth.Account, src health.Source, dial func(context.Context) (C, error)) (C, error) {
	var zero C
	if err := ctx.Err(); err != nil {
		return zero, err // spent before the dial (a slow token endpoint): nothing about the server
	}
	c, err := dial(ctx)
	if err != nil && gaveUp(ctx) {
		return zero, ctx.Err() // relayd is stopping, or the caller gave up
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("no answer within the time allowed (%w): %w", ctx.Err(), err)
		}
		he := health.Unreachable(src, serverAddr(a, src), err)
		a.Health.Fail(src, he)
		return zero, he
	}
	return c, nil
}

// lost reports a connection that failed during AUTH before the server
// said anything about the account: an outage, as if it could not be
// reached.
func lost(ctx context.Context, a *auth.Account, src health.Source, host string, err error) error {
	if gaveUp(ctx) {
		return ctx.Err() // relayd is stopping, or the caller gave up: nothing about the account
	}
	he := health.Unreachable(src, serverAddr(a, src), fmt.Errorf("AUTH at %s: %w", host, err))
	a.Health.Fail(src, he)
	return he
}

// gaveUp reports whether ctx was cancelled: relayd is stopping, or the
// caller went away. A deadline that passed is not that: the server took
// longer than relayd allows (an upstream answering a byte at a time),
// which is the account's outage and is reported like one.
func gaveUp(ctx context.Context) bool {
	return errors.Is(ctx.Err(), context.Canceled)
}

// serverAddr is the address of a's server for src.
func serverAddr(a *auth.Account, src health.Source) string {
	switch src {
	case health.SourceIMAP:
		return a.Config.IMAPServer
	case health.SourcePOP3:
		return a.Config.POP3Server
	}
	return a.Config.SMTPServer
}

// refused classifies and reports a refusal of the password or of a token
// already refreshed once.
func refused(ctx context.Context, a *auth.Account, src health.Source, host string, err error, refreshed bool) error {
	var r *Refusal
	if !errors.As(err, &r) {
		return lost(ctx, a, src, host, err)
	}
	he := Classify(a, host, r, refreshed)
	if he.Reason == health.ReasonUpstreamRejectedToken {
		a.Tokens.Forget(src) // nothing may use it
		a.Health.Fail(src, he)
		return he
	}
	a.Health.Fail(src, he)
	return he
}

// tokenError is a failure to get an access token. The token source
// reported its own conditions; a context that ended is no condition at
// all; anything else is a temporary condition of the token endpoint.
func tokenError(ctx context.Context, a *auth.Account, src health.Source, err error) error {
	if he := health.AsError(err); he != nil {
		return he
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	he := &health.Error{State: health.StateDegraded, Reason: health.ReasonTokenEndpointUnreachable,
		Advice: "could not get an access token; relayd retries", Err: err}
	a.Health.Fail(src, he)
	return he
}
