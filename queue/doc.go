// Package queue is relayd's durable outbound mail queue: the spool on disk,
// the per-account delivery scheduler, the fallback mailbox (fallback.go:
// a held account's mail sent through another account, rewrite.go: the
// copy it sends, RFC 5322 From and Reply-To), admin operations, and
// delivery status notifications (RFC 3464). The scheduler hands each message to a Transport
// (package transport/smtp is the first) and records what comes back; it
// asks the account's condition (package health, which owns every hold)
// whether mail may go. docs/architecture.md follows a message from the
// SMTP listener's 250 to the provider.
//
// # On-disk layout
//
// The spool is one directory, DIR, with one or two files per message:
//
//	DIR/ID.spool  a header line with two lengths and a sum, the message as
//	              received plus relayd's Received: header (and a
//	              Message-ID: when the client sent none), then the
//	              metadata it was queued with (spool.go, fileHeader)
//	DIR/ID.json   the metadata once it changed: account, envelope,
//	              per-recipient state, attempts, timestamps, last error,
//	              state
//	DIR/ID.msg    from relayd before December 2026 only: the message
//	              alone, its metadata in ID.json
//
// DIR/held-accounts.list for the accounts an admin held (relayd queue hold
// ACCOUNT), DIR/condition-holds.list for when each account's hold for its
// condition began (so that time held before a restart stays out of
// lifetimes), DIR/fallback-rewrite.list for the accounts whose fallback
// mailbox was refused Send As and rewrites From until they are
// reauthorized (fallback.go), DIR/lock, which the one process using the spool holds
// (flock), and DIR/tmp/ for metadata being written.
//
// A new message's file is written in place, its header line last with
// the lengths and sum that say it is finished, and fsynced; then DIR is
// fsynced. Only after that does the client get "250 2.0.0 queued as ID"
// (as Postfix does). Concurrent submissions share the directory fsync
// (group commit). On start, every finished ID.spool is recovered, with
// ID.json's metadata when there is one; the first start after a boot
// also checks each lone ID.spool's sum, in case a power cut tore it
// (DIR/recovered-boot.list names the boot checked). An unfinished
// ID.spool, a lone ID.msg or ID.json, and everything in tmp/, is the
// remains of an unacknowledged submission or of a removal and is
// deleted; a finished-looking ID.spool that fails its checks is set
// aside as DIR/ID.damaged, and one of a newer relayd left alone.
//
// Metadata changes (attempts, recipient results, holds) are written to
// tmp/, fsynced and renamed over ID.json, so a crash leaves either the
// old or the new metadata.
//
// # States
//
//	queued   waiting for its next attempt (NextAttempt), or being delivered
//	held     not delivered until released: by an admin (relayd queue
//	         hold), or because the account cannot log in upstream (its grant
//	         died, or SMTP AUTH is disabled), or after relayd failed
//	         delivering it (quarantined). While an account holds its
//	         mail, lifetimes and attempt counters stop. List shows this
//	         state; ID.json stores only queued or failed, and admin_hold.
//	         An upstream that cannot be reached is not a hold: lifetimes
//	         run, and a message past its lifetime bounces with 5.4.7
//	         (scheduler.go, expireOverdue).
//	failed   every recipient is done and at least one failed permanently:
//	         kept for inspection (relayd queue show, retry, delete)
//
// A message whose recipients were all delivered is removed. Delivery is
// at-least-once: a crash after the upstream's 250 but before the spool is
// updated sends the message again, with the same Message-ID.
package queue
