package testkit

import (
	"net"
	"sync/atomic"
)

// downListener is a listener a test can take down without giving up its
// port: while down, each connection is accepted and reset at once, before
// any greeting, as by a server that is not running. Closing the listener
// instead would free the port, which another test's listener may take
// before the server comes back there.
type downListener struct {
	net.Listener
	down *atomic.Bool
}

func (l downListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil || !l.down.Load() {
			return c, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			tc.SetLinger(0) // a reset rather than an orderly end
		}
		c.Close()
	}
}
