package proxy

import (
	"bytes"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// A polite SMTP shutdown. go-smtp's Shutdown closes the listeners and
// waits for clients to leave, which an idle client never does. relayd
// ends each session itself: a client between commands gets 421 at once
// (RFC 5321 §3.8); one inside DATA or BDAT finishes its message and gets
// its 250 (the message is on disk) and then the 421. The connection
// wrapper does this through go-smtp's own read timeout, whose "idle
// timeout" 421 it rewords.

// shutdownListener wraps the connections of one listener.
type shutdownListener struct {
	net.Listener
}

func (l shutdownListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &shutdownConn{Conn: c}, nil
}

// shutdownConn is a downstream SMTP connection that can be told to end at
// its next read.
type shutdownConn struct {
	net.Conn
	ending atomic.Bool
}

// end makes the session's next (or current) command read time out, so
// that go-smtp answers 421 and closes.
func (c *shutdownConn) end() {
	c.ending.Store(true)
	c.Conn.SetReadDeadline(time.Now())
}

// SetReadDeadline keeps an ending connection's deadline in the past:
// go-smtp sets a fresh one before every command.
func (c *shutdownConn) SetReadDeadline(t time.Time) error {
	if c.ending.Load() {
		t = time.Now()
	}
	return c.Conn.SetReadDeadline(t)
}

var (
	idleTimeoutReply = []byte("421 4.4.2 Idle timeout, bye bye\r\n")
	shutdownReply    = []byte("421 4.3.2 relayd is shutting down, try again later\r\n")
)

func (c *shutdownConn) Write(b []byte) (int, error) {
	if c.ending.Load() && bytes.Equal(b, idleTimeoutReply) {
		if _, err := c.Conn.Write(shutdownReply); err != nil {
			return 0, err
		}
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// sessions tracks the open SMTP sessions for a shutdown.
type sessions struct {
	mu     sync.Mutex
	open   map[*smtpSession]struct{}
	ending bool
}

func (s *sessions) add(sess *smtpSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.open == nil {
		s.open = map[*smtpSession]struct{}{}
	}
	s.open[sess] = struct{}{}
	if s.ending {
		sess.conn.end()
	}
}

func (s *sessions) remove(sess *smtpSession) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.open, sess)
}

// endAll ends every session not in the middle of a message; those end
// when their message is stored. It returns how many were open.
func (s *sessions) endAll() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ending = true
	for sess := range s.open {
		sess.mu.Lock()
		if !sess.inData {
			sess.conn.end()
		}
		sess.mu.Unlock()
	}
	return len(s.open)
}

// count is how many sessions are open.
func (s *sessions) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.open)
}

// dataDone is called as a session leaves DATA or BDAT: during a shutdown
// it ends after its reply.
func (s *sessions) dataDone(sess *smtpSession) {
	s.mu.Lock()
	ending := s.ending
	s.mu.Unlock()
	sess.mu.Lock()
	sess.inData = false
	sess.mu.Unlock()
	if ending {
		sess.conn.end()
	}
}
