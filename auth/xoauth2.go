package auth

import (
	"github.com/emersion/go-sasl"
)

// XOAUTH2 is the SASL mechanism name of Google's and Microsoft's OAuth 2.0
// bearer-token login.
const XOAUTH2 = "XOAUTH2"

type xoauth2Client struct {
	user, token string
	failed      bool
}

// NewXOAUTH2Client returns a SASL client for XOAUTH2.
//
// The initial response is "user=" user "\x01auth=Bearer " token "\x01\x01".
// On failure Google and Dovecot send a challenge with a JSON error; the
// client must answer it with an empty response, after which the server
// sends its final failure. Next therefore returns an empty, non-nil response
// (returning an error would desynchronise go-imap's client; returning nil
// would make go-smtp report success). Exchange answers a bad token at once.
func NewXOAUTH2Client(user, token string) sasl.Client {
	return &xoauth2Client{user: user, token: token}
}

func (c *xoauth2Client) Start() (string, []byte, error) {
	return XOAUTH2, XOAUTH2Response(c.user, c.token), nil
}

func (c *xoauth2Client) Next(challenge []byte) ([]byte, error) {
	if c.failed {
		return nil, sasl.ErrUnexpectedServerChallenge
	}
	c.failed = true
	return []byte{}, nil
}

// XOAUTH2Response is the raw (not yet base64-encoded) XOAUTH2 initial
// response.
func XOAUTH2Response(user, token string) []byte {
	b := make([]byte, 0, len(user)+len(token)+20)
	b = append(b, "user="...)
	b = append(b, user...)
	b = append(b, "\x01auth=Bearer "...)
	b = append(b, token...)
	b = append(b, "\x01\x01"...)
	return b
}
