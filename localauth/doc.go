// Package localauth checks the logins legacy clients send downstream (IMAP
// LOGIN and AUTHENTICATE PLAIN/LOGIN, SMTP AUTH PLAIN/LOGIN): the user name
// picks the account (local_user), the password is checked against its
// local_password_hash with bcrypt, one check at a time per user and shared
// by identical attempts, with verified passwords remembered briefly so that
// a busy client does not pay bcrypt on every login (local.go). The Guard
// throttles guessing: failures are counted per local user in a sliding
// window and a user with too many is locked out for a while, except for
// the password that last succeeded (guard.go; docs/decisions.md says why).
//
// Used by the IMAP and SMTP listeners (package proxy); relayd
// hash-password makes the hashes.
package localauth
