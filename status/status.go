// Package status serves relayd's status socket: an HTTP API on a Unix
// socket (mode 0660) with GET /v1/status, one JSON document describing
// every account, and the control calls the command line needs, such as
// handing a new grant to the running daemon. It also holds the client the
// CLI uses, the human-readable rendering of the status, and the Prometheus
// metrics (metrics.go), whose Metrics is also the listeners' proxy.Recorder.
// It reads the running accounts through a Backend (the daemon).
package status

import (
	"fmt"
	"strings"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/queue"
)

// Status is the document served at GET /v1/status.
type Status struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Banner  string    `json:"banner"`
	// Panics is how many internal errors relayd recovered from since it
	// started (each account counts its own too).
	Panics int64 `json:"panics"`
	// LockedOut are the local users refused for now after repeated failed
	// logins.
	LockedOut []localauth.Locked `json:"locked_out,omitempty"`
	Accounts  []Account          `json:"accounts"`
	// Orphaned counts the messages still queued for accounts that are
	// not configured any more; OrphanedAccounts has them by account.
	Orphaned         int            `json:"orphaned"`
	OrphanedAccounts []queue.Orphan `json:"orphaned_accounts,omitempty"`
	// Certificates are those the downstream listeners present, one per
	// protocol with tls_cert.
	Certificates []Certificate `json:"certificates,omitempty"`
	// Encryption says whether grant files are encrypted at rest, under
	// which key, and what is wrong when they are not.
	Encryption Encryption `json:"encryption"`
	// SpoolFailing is set while the spool cannot store submissions
	// (clients get 452 4.3.1): since when, how many were refused, the
	// last error. It clears at the next stored message.
	SpoolFailing *queue.StoreFailure `json:"spool_failing,omitempty"`
}

// SetSpoolFailing records the spool's store failure, if any, and adds it
// to the banner.
func (st *Status) SetSpoolFailing(f *queue.StoreFailure) {
	st.SpoolFailing = f
	if f == nil {
		return
	}
	st.Banner += fmt.Sprintf("; the spool cannot store mail (%d %s refused with 452 since %s): %s",
		f.Refused, plural(f.Refused, "submission", "submissions"), f.Since.Local().Format("15:04:05"), f.LastError)
}

// Certificate is one protocol's listener certificate.
type Certificate struct {
	Protocol string    `json:"protocol"` // imap, smtp, pop3
	File     string    `json:"file"`     // its tls_cert
	Subject  string    `json:"subject"`  // its first DNS name, or its common name
	NotAfter time.Time `json:"not_after"`
	// ExpiresSoon: it ends within 14 days, or has ended; replace the file
	// and run relayd reload.
	ExpiresSoon bool `json:"expires_soon"`
}

// Encryption is the token store's encryption at rest.
type Encryption struct {
	// Enabled: new and refreshed grants are written encrypted.
	Enabled bool `json:"enabled"`
	// KeyID names the key (not the key itself); Where is where it comes
	// from: "key_file /etc/relayd/relayd.key" or "the systemd credential
	// relayd.key".
	KeyID string `json:"key_id,omitempty"`
	Where string `json:"where,omitempty"`
	// Warning says what is wrong (no key file: grants in plain files; a
	// key that cannot be read) and what to do.
	Warning string `json:"warning,omitempty"`
}

// SetOrphans records the queues of accounts no longer configured and
// adds them to the banner.
func (st *Status) SetOrphans(l []queue.Orphan) {
	st.OrphanedAccounts = l
	st.Orphaned = 0
	var names []string
	for _, o := range l {
		st.Orphaned += o.Queued + o.Held + o.Failed
		names = append(names, o.Account)
	}
	if st.Orphaned == 0 {
		return
	}
	st.Banner += fmt.Sprintf("; %d %s of removed %s kept, held: %s",
		st.Orphaned, plural(st.Orphaned, "message", "messages"), plural(len(names), "account", "accounts"), strings.Join(names, ", "))
}

// Account is one account's status.
type Account struct {
	Name      string `json:"name"`
	Email     string `json:"email"`
	Provider  string `json:"provider"`
	Direction string `json:"direction"`
	// Transport is how the account's outgoing mail leaves: "smtp" or
	// "graph" (Microsoft Graph sendMail).
	Transport string `json:"transport"`
	// Health is the account's condition (package health decides it):
	// state, reason, advice, since, last error and success, and when its
	// outgoing mail was held.
	health.Snapshot
	Token        Token `json:"token"`
	IMAPSessions int64 `json:"imap_sessions"`
	SMTPSessions int64 `json:"smtp_sessions"`
	POP3Sessions int64 `json:"pop3_sessions"`
	// WarmIMAP and WarmPOP3 are the account's warm upstream connections
	// (warm_connections); nil when it keeps none of that protocol.
	WarmIMAP *Warm `json:"warm_imap,omitempty"`
	WarmPOP3 *Warm `json:"warm_pop3,omitempty"`
	// Queue is the account's outbound queue.
	Queue *queue.AccountStats `json:"queue,omitempty"`
}

// Warm is the state of an account's warm upstream connections of one
// protocol: dialed, TLS-handshaked and greeted, waiting for a login.
type Warm struct {
	// Ready connections wait for a login; Target is warm_connections (0
	// while the account's condition holds the pool).
	Ready  int `json:"ready"`
	Target int `json:"target"`
	// Served logins took a warm connection, Missed found none ready;
	// Discarded connections were found closed by the upstream when a
	// login wanted them; DialFailures counts failed dials. Counted since
	// the account's pool started (relayd's start or the reload that
	// edited the account).
	Served       uint64 `json:"served"`
	Missed       uint64 `json:"missed"`
	Discarded    uint64 `json:"discarded"`
	DialFailures uint64 `json:"dial_failures"`
}

// String is "ready/target".
func (w *Warm) String() string {
	if w == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", w.Ready, w.Target)
}

// Token is what status shows of an account's grant.
type Token struct {
	// State and Advice repeat the account's, for scripts that read them
	// here before the account had its own.
	State  health.State `json:"state"`
	Advice string       `json:"advice,omitempty"`
	auth.TokenStatus
}

// NeedsAttention reports whether an admin must act on the account.
func (a *Account) NeedsAttention() bool { return a.State.NeedsAttention() }

// NotAuthorized reports whether nobody signed in for the account yet
// (state needs_reauth, reason no_grant): it reads "not authorized yet",
// not "needs reauthorization".
func (a *Account) NotAuthorized() bool {
	return a.State == health.StateNeedsReauth && a.Reason == health.ReasonNoGrant
}

// MakeBanner summarises the accounts in one line, e.g. "1 of 3 mailboxes
// needs reauthorization: support".
func MakeBanner(accts []Account) string {
	var unauthorized, reauth, admin, disconnected, degraded, warning []string
	for _, a := range accts {
		if a.NotAuthorized() {
			unauthorized = append(unauthorized, a.Name)
			continue
		}
		switch a.State {
		case health.StateNeedsReauth:
			reauth = append(reauth, a.Name)
		case health.StateNeedsAdmin:
			admin = append(admin, a.Name)
		case health.StateDisconnected:
			disconnected = append(disconnected, a.Name)
		case health.StateDegraded:
			degraded = append(degraded, a.Name)
		case health.StateWarning:
			warning = append(warning, a.Name)
		}
	}
	n := len(accts)
	var parts []string
	if len(unauthorized) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d %s not authorized yet: %s", len(unauthorized), n, plural(n, "mailbox", "mailboxes"), strings.Join(unauthorized, ", ")))
	}
	if len(reauth) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d %s reauthorization: %s", len(reauth), n, needs(len(reauth), n), strings.Join(reauth, ", ")))
	}
	if len(admin) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d %s an administrator: %s", len(admin), n, needs(len(admin), n), strings.Join(admin, ", ")))
	}
	if len(disconnected) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d disconnected (relayd keeps trying): %s", len(disconnected), n, strings.Join(disconnected, ", ")))
	}
	if len(degraded) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d degraded (retrying): %s", len(degraded), n, strings.Join(degraded, ", ")))
	}
	if len(warning) > 0 {
		parts = append(parts, fmt.Sprintf("%d of %d %s reauthorization soon: %s", len(warning), n, needs(len(warning), n), strings.Join(warning, ", ")))
	}
	if len(parts) == 0 {
		return fmt.Sprintf("all %d %s ok", n, plural(n, "mailbox", "mailboxes"))
	}
	return strings.Join(parts, "; ")
}

// needs is "mailboxes needs" in "1 of 3 mailboxes needs": the noun agrees
// with the total, the verb with the count.
func needs(k, n int) string {
	verb := "need"
	if k == 1 {
		verb = "needs"
	}
	return plural(n, "mailbox", "mailboxes") + " " + verb
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
