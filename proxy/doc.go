// Package proxy holds relayd's downstream listeners: IMAP, POP3 and SMTP.
//
// The IMAP proxy (imap*.go) answers the not-authenticated state itself
// (RFC 3501 §6.1–6.2, RFC 9051; SASL-IR per RFC 4959; LITERAL- per RFC
// 7888), checks the legacy client's local credentials, authenticates
// upstream with SASL XOAUTH2 (or PLAIN for password accounts) through
// package upstream, hands the
// client the upstream's tagged OK with its post-login capabilities, and from
// then on copies bytes in both directions without parsing them, so every
// extension the upstream has works at full speed. A direction quiet for a
// second parks (park.go): its goroutine ends and one epoll set for
// the process waits for its socket, so an idle session holds no goroutine;
// a parked TLS connection gives crypto/tls's empty read buffers back
// (tlsidle.go). Upstream logins in progress are bounded (gate.go).
//
// The POP3 proxy (pop3*.go) does the same for POP3 (RFC 1939; CAPA per
// RFC 2449, AUTH per RFC 5034, STLS per RFC 2595, response codes per RFC
// 3206): relayd answers the AUTHORIZATION state, logs in upstream with
// AUTH XOAUTH2 (PLAIN or USER/PASS for password accounts), hands the
// client the upstream's +OK and splices. What the two share — the accept
// loop, the local login check, an upstream failure's words, the splice —
// is in session.go.
//
// The SMTP listener (smtp.go) is a go-smtp submission server (RFC 6409):
// AUTH PLAIN or LOGIN (sasl_login.go; RFC 4954) with the same local
// credentials, plaintext AUTH on loopback listeners only, the envelope
// policy (an account sends only as its own addresses), and DATA or BDAT
// (RFC 3030) streamed into the durable queue of package queue, which
// answers 250 only once the message is on disk.
//
// Downstream TLS (tls.go; certificates from package internal/tlscert):
// STARTTLS on plain listeners while a certificate is set (RFC 3501
// §6.2.1, RFC 3207), implicit TLS with ServeTLS (RFC 8314), TLS 1.2 at
// least. A listener beyond loopback takes no password before TLS
// (plaintextAuthAllowed: IMAP LOGINDISABLED, SMTP 523/530); a POP3
// listener asks the same function, leaves USER and SASL out of CAPA
// before STLS and refuses USER, PASS and AUTH (RFC 2595 §4). allow_from is a session limit (limits.go), checked before
// the greeting.
//
// Both check local credentials with package localauth and are given the
// running accounts once (package registry): the IMAP proxy takes the
// account it logs in upstream from there, the SMTP listener only the
// condition a panic is counted with. They report what they do (logins,
// refusals by a limit, sessions' ends) to a Recorder (recorder.go;
// status.Metrics is one); a recovered panic is counted by health.Recovered.
//
// Downstream means the legacy client's side, upstream the real mail server.
package proxy
