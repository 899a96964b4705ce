// Package auth owns relayd's upstream OAuth 2.0: the token store (store.go),
// one refreshing token source per account shared by all its connections,
// with its keep-alive, retry budget and forecast (source.go), the grants that
// obtain tokens without a person (importing a refresh token, client
// credentials, Google service accounts and certificate-signed client
// assertions: grant.go, apponly.go), the check that an ID token names the
// account's login (idtoken.go, also applied to a grant handed over by
// 'relayd authorize'), the classification of token-endpoint errors into an
// account's condition (classify.go, reported to package health, which alone
// decides it), and the SASL XOAUTH2 client used upstream (xoauth2.go).
//
// Local logins (the passwords legacy clients send downstream, and the
// login guard) are package localauth.
//
// The interactive sign-in (device code, browser with PKCE) is package signin:
// only 'relayd authorize' needs it, and it builds on OAuthConfig,
// ClientSecret, Describe and CheckIdentity here.
//
// OAuth 2.0 follows RFC 6749 (grants, refresh, §6 refresh tokens bound to
// the client id) and RFC 7523 (JWT bearer grant and client assertions); ID
// tokens follow OpenID Connect Core §3.1.3.7; XOAUTH2 follows Google's and
// Microsoft's published format, described in docs/providers.md.
package auth
