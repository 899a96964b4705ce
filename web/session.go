package web

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"net/http"
	"sync"
	"time"
)

// Role is what a console session may do.
type Role int

const (
	// Reader sees every page but changes nothing.
	Reader Role = iota
	// Admin may also reauthorize mailboxes and change the queue.
	Admin
)

func (r Role) String() string {
	if r == Admin {
		return "admin"
	}
	return "read-only"
}

// Caps on what sessions may accumulate in memory, per role: beyond them a
// new link or session replaces the oldest of its own role, so that
// readers (any member of group relayd may run relayd web-login) never
// push out an admin's. A session also ends maxAge after it started,
// whatever its use.
const (
	maxLinks    = 16
	maxSessions = 32
	maxAge      = 12 * time.Hour
)

// session is a signed-in browser.
type session struct {
	id     string // the cookie's value
	role   Role
	origin string // who ran relayd web-login, for the audit log
	csrf   string // the token every form of the session carries
	seen   time.Time

	flash   string // a line to show once, on the next page
	streams int    // live-update streams open (at most maxStreamsPerSession)
	created time.Time
}

// maxStreamsPerSession bounds one session's live-update streams (a tab
// each): a session cannot take the console's whole share.
const maxStreamsPerSession = 4

// openStream counts a stream of ss, unless it has as many as it may.
func (s *sessions) openStream(ss *session) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ss.streams >= maxStreamsPerSession {
		return false
	}
	ss.streams++
	return true
}

func (s *sessions) closeStream(ss *session) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.streams--
}

// link is a one-time sign-in link relayd web-login printed.
type link struct {
	role    Role
	origin  string
	expires time.Time
}

// sessions holds the console's links and sessions. Safe from any
// goroutine.
type sessions struct {
	idle, linkTTL time.Duration
	now           func() time.Time

	mu    sync.Mutex
	links map[[32]byte]link     // by the SHA-256 of the link's token
	byID  map[[32]byte]*session // by the SHA-256 of the cookie's value
}

func newSessions(idle, linkTTL time.Duration, now func() time.Time) *sessions {
	return &sessions{idle: idle, linkTTL: linkTTL, now: now,
		links: map[[32]byte]link{}, byID: map[[32]byte]*session{}}
}

// newToken returns 256 random bits, URL-safe.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

func key(token string) [32]byte { return sha256.Sum256([]byte(token)) }

// issue makes a one-time link token for role, valid for linkTTL.
func (s *sessions) issue(role Role, origin string) (token string, expires time.Time) {
	token = newToken()
	now := s.now()
	expires = now.Add(s.linkTTL)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pruneLocked(now)
	makeRoom(s.links, maxLinks, func(l link) (bool, time.Time) { return l.role == role, l.expires })
	s.links[key(token)] = link{role: role, origin: origin, expires: expires}
	return token, expires
}

// makeRoom deletes from m the oldest entries of those that of picks (of
// says whether an entry counts and its age) until fewer than max count.
func makeRoom[V any](m map[[32]byte]V, max int, of func(V) (bool, time.Time)) {
	for {
		var oldest [32]byte
		var at time.Time
		n := 0
		for k, v := range m {
			counts, t := of(v)
			if !counts {
				continue
			}
			n++
			if at.IsZero() || t.Before(at) {
				oldest, at = k, t
			}
		}
		if n < max {
			return
		}
		delete(m, oldest)
	}
}

// peek returns the link token names while it still works, without using
// it.
func (s *sessions) peek(token string) (link, bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	l, ok := s.links[key(token)]
	return l, ok && now.Before(l.expires)
}

var errLinkUsed = errors.New("this sign-in link was already used, has expired, or is not one relayd issued")

// redeem turns a link token into a new session, once: the link is gone
// whatever the outcome.
func (s *sessions) redeem(token string) (*session, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(token)
	l, ok := s.links[k]
	delete(s.links, k)
	if !ok || !now.Before(l.expires) {
		return nil, errLinkUsed
	}
	s.pruneLocked(now)
	makeRoom(s.byID, maxSessions, func(ss *session) (bool, time.Time) { return ss.role == l.role, ss.seen })
	ss := &session{id: newToken(), role: l.role, origin: l.origin, csrf: newToken(), seen: now, created: now}
	s.byID[key(ss.id)] = ss
	return ss, nil
}

// get returns the session whose cookie value is id, touching it, or nil
// when there is none or it has been idle too long.
func (s *sessions) get(id string, touch bool) *session {
	if id == "" {
		return nil
	}
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(id)
	ss := s.byID[k]
	if ss == nil {
		return nil
	}
	if s.expired(ss, now) {
		delete(s.byID, k)
		return nil
	}
	if touch {
		ss.seen = now
	}
	return ss
}

// end ends the session id.
func (s *sessions) end(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.byID, key(id))
}

// alive reports whether ss is still a session (not ended, not idle too
// long), without touching it.
func (s *sessions) alive(ss *session) bool { return s.get(ss.id, false) != nil }

// takeFlash returns the session's flash line and clears it.
func (s *sessions) takeFlash(ss *session) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := ss.flash
	ss.flash = ""
	return f
}

func (s *sessions) setFlash(ss *session, f string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ss.flash = f
}

func (s *sessions) pruneLocked(now time.Time) {
	for k, l := range s.links {
		if !now.Before(l.expires) {
			delete(s.links, k)
		}
	}
	for k, ss := range s.byID {
		if s.expired(ss, now) {
			delete(s.byID, k)
		}
	}
}

// expired reports whether ss has been idle too long or lived too long.
func (s *sessions) expired(ss *session, now time.Time) bool {
	return now.Sub(ss.seen) >= s.idle || now.Sub(ss.created) >= maxAge
}

// endAll ends every session and forgets every link (the admin group
// changed: roles are decided again at the next relayd web-login).
func (s *sessions) endAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.byID)
	clear(s.byID)
	clear(s.links)
	return n
}

// checkCSRF reports whether r's form carries ss's token.
func checkCSRF(r *http.Request, ss *session) bool {
	got := r.PostFormValue("csrf")
	return got != "" && subtle.ConstantTimeCompare([]byte(got), []byte(ss.csrf)) == 1
}
