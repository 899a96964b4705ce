// Package transport chooses, per account, how the queue's messages leave:
// package transport/smtp (SMTP AUTH XOAUTH2, the default) or
// transport/graph (Microsoft Graph sendMail, transport = "graph").
package transport

import (
	"context"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/queue"
)

// ByAccount is a queue.Transport that hands each account's mail to the
// transport its configuration names.
type ByAccount struct{ SMTP, Graph queue.Transport }

// Open implements queue.Transport.
func (t ByAccount) Open(ctx context.Context, a *auth.Account) (queue.Conn, error) {
	if a.Config.Graph() {
		return t.Graph.Open(ctx, a)
	}
	return t.SMTP.Open(ctx, a)
}
