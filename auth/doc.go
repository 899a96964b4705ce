// Package auth owns everything relayd knows about credentials: the token
// store, one refreshing token source per account shared by all its
// connections, the grants that obtain tokens (client credentials, importing a
// refresh token), the SASL XOAUTH2 client used upstream, the check of the
// passwords legacy clients send downstream, and each account's health.
//
// OAuth 2.0 follows RFC 6749 (grants, refresh, §6 refresh tokens bound to
// the client id); XOAUTH2 follows Google's and Microsoft's published format,
// described in PROVIDERS.md.
package auth
