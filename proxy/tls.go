package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

// Downstream TLS. A listener is implicit TLS (IMAP on 993, SMTP on 465:
// RFC 8314 §3) when served with ServeTLS; a plain one offers STARTTLS
// (RFC 3501 §6.2.1, RFC 3207) while its server has a certificate. Which
// listener may take a password before TLS is decided by its own address
// alone (plaintextAuthAllowed): a loopback listener may, any other may not,
// whatever the client's address.

// plaintextAuthAllowed reports whether a plain listener bound to addr may
// take passwords before TLS: only on loopback, where they cannot leave the
// host. A wildcard address (0.0.0.0, ::) is not loopback.
func plaintextAuthAllowed(addr net.Addr) bool {
	var ip netip.Addr
	switch a := addr.(type) {
	case *net.TCPAddr:
		ip, _ = netip.AddrFromSlice(a.IP)
	default:
		ap, err := netip.ParseAddrPort(addr.String())
		if err != nil {
			// A Unix socket or a pipe (tests): nothing leaves the host.
			return true
		}
		ip = ap.Addr()
	}
	return ip.Unmap().IsLoopback()
}

// handshakeTLS runs the server side of a TLS handshake on raw within
// timeout. A client that sent plaintext instead of a ClientHello (it
// expected a plaintext port) is told refusal in plaintext, as net/http
// tells an HTTP client on an HTTPS port, before the error returns.
//
// The TLS connection reads raw through a gatherConn, so that a spliced
// session's client direction can read what the socket holds without
// waiting and then park (copyIdle).
func handshakeTLS(raw net.Conn, cfg *tls.Config, timeout time.Duration, refusal string) (*tls.Conn, error) {
	tc := tls.Server(newGatherConn(raw), cfg)
	raw.SetDeadline(time.Now().Add(timeout))
	err := tc.Handshake()
	var rhe tls.RecordHeaderError
	if errors.As(err, &rhe) && rhe.Conn != nil && refusal != "" {
		rhe.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		rhe.Conn.Write([]byte(refusal))
	}
	if err != nil {
		return nil, err
	}
	return tc, nil
}

// isTLSClientHello reports whether b starts like a TLS handshake record
// (RFC 8446 §5.1: content type 22, legacy version 3.x): a TLS client on a
// plaintext port.
func isTLSClientHello(b []byte) bool {
	return len(b) >= 2 && b[0] == 0x16 && b[1] == 0x03
}

// implicitTLSListener wraps each accepted connection in a server TLS
// connection whose handshake runs at its first read or write, in the
// session's goroutine (never in Accept's).
type implicitTLSListener struct {
	net.Listener
	cfg     *tls.Config
	timeout time.Duration
	refusal string
}

func (l implicitTLSListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &lazyTLSConn{Conn: c, l: &l}, nil
}

// lazyTLSConn is an implicit-TLS connection that shakes hands when first
// used. Deadlines, Close and the addresses are the TCP connection's, which
// crypto/tls uses too, so that other goroutines may call them at any time.
type lazyTLSConn struct {
	net.Conn // the TCP connection
	l        *implicitTLSListener
	once     sync.Once
	tc       *tls.Conn // set by the handshake
	err      error
}

func (c *lazyTLSConn) handshake() error {
	c.once.Do(func() {
		c.tc, c.err = handshakeTLS(c.Conn, c.l.cfg, c.l.timeout, c.l.refusal)
	})
	return c.err
}

func (c *lazyTLSConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.tc.Read(b)
}

func (c *lazyTLSConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.tc.Write(b)
}

// upstreamTLS is the client side of TLS to an upstream server, over raw
// wrapped in a gatherConn so that the spliced copy can read what the
// socket holds without waiting (gather).
func upstreamTLS(raw net.Conn, cfg *tls.Config) *tls.Conn {
	return tls.Client(newGatherConn(raw), cfg)
}

// A gatherConn is the TCP connection under an upstream's TLS. While
// nonblocking is set, a read takes what the socket holds and fails with
// os.ErrDeadlineExceeded (a temporary error, after which crypto/tls keeps
// its state) rather than waiting. A deadline in the past would not do:
// Go's poller then fails the read before trying the socket, so a gather
// would only take the records crypto/tls already read. Only the goroutine
// reading the TLS connection sets nonblocking, between its reads.
type gatherConn struct {
	net.Conn
	rc          syscall.RawConn
	nonblocking bool
}

// gatherUnder returns the gatherConn under c, a TLS connection relayd made
// (a client's, or an upstream's), or nil.
func gatherUnder(c net.Conn) *gatherConn {
	var tc *tls.Conn
	switch v := c.(type) {
	case *tls.Conn:
		tc = v
	case *lazyTLSConn:
		if v.handshake() != nil {
			return nil
		}
		tc = v.tc
	}
	if tc == nil {
		return nil
	}
	gc, _ := tc.NetConn().(*gatherConn)
	return gc
}

// newGatherConn wraps c, or returns c itself when it has no socket.
func newGatherConn(c net.Conn) net.Conn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return c
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return c
	}
	return &gatherConn{Conn: c, rc: rc}
}

// SyscallConn is the socket's, for waiting until it is readable.
func (c *gatherConn) SyscallConn() (syscall.RawConn, error) { return c.rc, nil }

func (c *gatherConn) Read(p []byte) (int, error) {
	if !c.nonblocking || len(p) == 0 {
		return c.Conn.Read(p)
	}
	var n int
	var err error
	if rerr := c.rc.Read(func(fd uintptr) bool {
		for {
			n, err = syscall.Read(int(fd), p)
			if err != syscall.EINTR {
				return true // never wait: EAGAIN is the answer
			}
		}
	}); rerr != nil {
		return 0, rerr
	}
	switch {
	case err == syscall.EAGAIN:
		return 0, os.ErrDeadlineExceeded
	case err != nil:
		return 0, os.NewSyscallError("read", err)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// plaintextListener wraps each connection of a plaintext SMTP port so that
// a client starting a TLS handshake there (set up for port 465, pointed at
// the STARTTLS port) is closed at its first read with a line in the log
// that says what to change, rather than whatever go-smtp makes of a
// ClientHello read as a command line. A TLS client reads no plaintext
// reply, so none is sent. (The IMAP and POP3 sessions look at their first bytes
// themselves: their connections must stay *net.TCPConn for splicing.)
type plaintextListener struct {
	net.Listener
	log *slog.Logger
}

func (l plaintextListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &firstReadConn{Conn: c, log: l.log}, nil
}

// errTLSOnPlaintext ends a session whose client sent a TLS handshake to a
// plaintext port.
var errTLSOnPlaintext = errors.New("the client started a TLS handshake on a plaintext port")

type firstReadConn struct {
	net.Conn
	log     *slog.Logger
	checked bool // the first bytes were looked at; only the reading goroutine uses it
}

func (c *firstReadConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if !c.checked && n > 0 {
		c.checked = true
		if b[0] == 0x16 && (n < 2 || b[1] == 0x03) {
			c.log.Info("SMTP client started a TLS handshake on a plaintext port: point it at an implicit-TLS address (smtp.listen_tls) or make it use STARTTLS",
				"remote", c.RemoteAddr().String())
			c.Conn.Close()
			return 0, errTLSOnPlaintext
		}
	}
	return n, err
}
