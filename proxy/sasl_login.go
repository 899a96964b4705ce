package proxy

import (
	"errors"
	"strings"

	"github.com/emersion/go-sasl"
)

var (
	errMalformed = errors.New("malformed SASL response")
	errAuthzid   = errors.New("authorization identity differs from the user")
)

// credentialsServer returns the server of mechanism mech (PLAIN, RFC
// 4616, or LOGIN) for a downstream login, which hands the credentials to
// capture; nil for any other mechanism. PLAIN refuses an authorization
// identity other than the user with errAuthzid, and both refuse an empty
// user with errMalformed. The IMAP and POP3 listeners share it.
func credentialsServer(mech string, capture func(user, pass string) error) sasl.Server {
	check := func(u, p string) error {
		if u == "" {
			return errMalformed
		}
		return capture(u, p)
	}
	switch strings.ToUpper(mech) {
	case sasl.Plain:
		return sasl.NewPlainServer(func(identity, u, p string) error {
			if identity != "" && identity != u {
				return errAuthzid
			}
			return check(u, p)
		})
	case sasl.Login:
		return newLoginServer(check)
	}
	return nil
}

// loginServer is the server side of the LOGIN SASL mechanism
// (draft-murchison-sasl-login), which go-sasl no longer provides and many
// legacy clients (Outlook Express, scanners) still use: the server asks
// "Username:" then "Password:".
type loginServer struct {
	check    func(user, pass string) error
	user     string
	gotUser  bool
	finished bool
}

// newLoginServer returns a LOGIN sasl.Server that calls check with the
// credentials.
func newLoginServer(check func(user, pass string) error) sasl.Server {
	return &loginServer{check: check}
}

func (s *loginServer) Next(resp []byte) (challenge []byte, done bool, err error) {
	if s.finished {
		return nil, false, errors.New("sasl: LOGIN exchange already finished")
	}
	switch {
	case !s.gotUser && resp == nil:
		return []byte("Username:"), false, nil
	case !s.gotUser:
		// An initial response (RFC 4954 §4) carries the user name.
		s.user, s.gotUser = string(resp), true
		return []byte("Password:"), false, nil
	default:
		s.finished = true
		return nil, true, s.check(s.user, string(resp))
	}
}
