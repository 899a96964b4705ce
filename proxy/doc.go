// Package proxy holds relayd's downstream listeners.
//
// The IMAP proxy (imap*.go) answers the not-authenticated state itself
// (RFC 3501 §6.1–6.2, RFC 9051; SASL-IR per RFC 4959; LITERAL- per RFC
// 7888), checks the legacy client's local credentials, authenticates
// upstream with SASL XOAUTH2 (or PLAIN for password accounts), hands the
// client the upstream's tagged OK with its post-login capabilities, and from
// then on copies bytes in both directions without parsing them, so every
// extension the upstream has works at full speed.
//
// Downstream means the legacy client's side, upstream the real mail server.
package proxy
