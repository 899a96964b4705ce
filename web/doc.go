// Package web serves relayd's web console: one server-rendered page with
// every mailbox's state, a queue page per mailbox, and a "Reauthorize"
// button that finishes the sign-in in the browser. It is for the people
// who fix a dead mailbox and are not always sysadmins.
//
// It is off unless [web] listen is set. Nobody signs in with a password:
// 'relayd web-login' asks the running daemon, over the status socket, for
// a one-time link (IssueLink) that starts a session with the role of
// whoever ran it there, read-only for readers and able to reauthorize and
// change the queue for admins; the link's page shows its role and a
// button whose POST uses it. Sessions live in memory, capped per role,
// and end after [web] session_idle without a request, 12 hours after they
// started, when a reload changes admin_group, or when relayd stops.
//
// Security, in the order a request meets it: a connection cap per
// listener and per client address beyond loopback (every ssh -L user is
// 127.0.0.1), header and request timeouts; strict
// response headers (Content-Security-Policy with no inline script,
// X-Frame-Options DENY, no referrer, no caching); the session cookie
// (HttpOnly, SameSite=Strict, Secure and __Host- under TLS); a CSRF token
// in every form, checked on every POST, besides net/http's
// CrossOriginProtection; the role, checked by every handler that changes
// anything, and every change logged with the session's origin.
//
// The browser sign-in is the authorization code flow with PKCE (RFC 7636)
// through package signin, redirected to [web] redirect_uri
// (/oauth/callback). A SameSite=Strict cookie does not come back with
// the identity provider's redirect, so the sign-in is bound to the session
// that started it on the server, through the state parameter (RFC 6749
// §10.12), single use and short-lived: the callback needs no cookie.
// Reauthorize answers with a page that moves on to the sign-in page
// rather than a redirect, so that the policy's form-action stays 'self'.
// Without a registered redirect the console offers the device code
// (Microsoft) or the paste-the-address step with a loopback redirect
// (Google), as 'relayd authorize' does.
//
// Live updates are server-sent events (events.go): one watcher goroutine
// (watch.go) reads the status while any page is open and wakes the streams
// when what the page shows changed.
package web
