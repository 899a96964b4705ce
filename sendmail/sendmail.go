// Package sendmail is relayd's sendmail(8): the command line scripts and
// cron jobs use (args.go), who may send as which account and what the
// stored copy looks like (prepare.go), and the maildrop that holds
// messages root or relayd's own user submitted while the daemon was
// stopped (maildrop.go).
//
// The command (cmd/relayd/sendmail.go) reads the message on standard
// input and hands it to the running daemon over the sendmail socket
// (status.Client.Submit); the daemon prepares it here, under the
// caller's peer credentials, and queues it (queue.Queue.Submit, fsynced)
// before it answers. Exit statuses are sendmail's, from sysexits.h.
//
// Header handling follows RFC 5322: -t takes the recipients from To:, Cc:
// and Bcc: (§3.6.3) and adds those of the command line, as Postfix does;
// Bcc: is removed from the stored copy; From: and Date: (§3.6) are added
// when missing; a Received: trace field records the local submission
// (RFC 5321 §4.4).
package sendmail

import "fmt"

// Exit statuses of sysexits.h, which sendmail's callers (cron, mail(1),
// PHP's mail()) understand.
const (
	ExUsage    = 64 // the command line was wrong
	ExDataErr  = 65 // the message was wrong (too large, a header unreadable)
	ExNoInput  = 66 // the message could not be read
	ExNoUser   = 67 // an address is unknown or not a full address
	ExSoftware = 70 // an internal error
	ExIOErr    = 74 // an input or output error
	ExTempFail = 75 // try again later: nothing was queued
	ExNoPerm   = 77 // the caller may not send as that account
	ExConfig   = 78 // relayd's configuration is wrong
)

// Error is a refusal with the exit status relayd sendmail exits with.
type Error struct {
	Code int    // one of the Ex constants
	Msg  string // what went wrong and what to do, for the caller's stderr
}

func (e *Error) Error() string { return e.Msg }

func errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Request is what relayd sendmail asks the daemon to do with the message
// that follows it: the command line's meaning, without the flags that
// only change how the command reads its input.
type Request struct {
	// From is -f (or -r): the envelope sender, which chooses the account.
	From string `json:"from,omitempty"`
	// FullName is -F: the sender's name for a From: field relayd adds.
	FullName string `json:"full_name,omitempty"`
	// ExtractRecipients is -t: the recipients are read from the message's
	// To:, Cc: and Bcc: fields, besides those of the command line.
	ExtractRecipients bool `json:"extract_recipients,omitempty"`
	// Recipients are the command line's addresses.
	Recipients []string `json:"recipients,omitempty"`
}

// Caller is who runs relayd sendmail, as the kernel says (SO_PEERCRED and
// SO_PEERGROUPS on the socket, or the process's own ids for the
// maildrop).
type Caller struct {
	UID, GID int
	Groups   []int // supplementary groups
}
