package proxy

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// captureConn is a client's TCP connection whose writes can be kept
// instead of sent, so that a test can send a TLS client's records in
// pieces of its choosing.
type captureConn struct {
	net.Conn
	mu      sync.Mutex
	capture bool
	buf     bytes.Buffer
}

func (c *captureConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.capture {
		return c.buf.Write(b)
	}
	return c.Conn.Write(b)
}

// take returns what was captured since the last take.
func (c *captureConn) take() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := bytes.Clone(c.buf.Bytes())
	c.buf.Reset()
	return b
}

// A TLS 1.2 client's alert record that has only begun to arrive behind
// its last data is not the client's idle timeout: crypto/tls, having
// returned the data, peeks at the alert (to report a close_notify with
// it) and, reading without waiting, meets the socket's EAGAIN. The
// session goes on until the alert is whole, and then ends as the client
// closing it.
func TestParkedTLS12ClientSplitAlert(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	u := newRawUpstream(t, false)
	r := newTestRelay(t, relayOpts{upstream: u.start, listenerTLS: c.holder.Config})
	nc, err := net.DialTimeout("tcp", r.tlsAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	cc := &captureConn{Conn: nc}
	cfg := c.client("127.0.0.1")
	cfg.MaxVersion = tls.VersionTLS12
	tc := tls.Client(cc, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: t, c: tc, br: bufio.NewReader(tc)}
	rw.line() // the greeting
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("LOGIN reply = %q, want a OK", got)
	}
	up := <-u.conns
	waitParked(t, 2)

	cc.mu.Lock()
	cc.capture = true
	cc.mu.Unlock()
	rw.send("b NOOP\r\n")
	data := cc.take()
	tc.CloseWrite() // a close_notify alert: a TLS 1.2 record of type alert
	alert := cc.take()
	nc.SetWriteDeadline(time.Time{}) // CloseWrite set it to now
	if len(alert) < 5 || alert[0] != 21 {
		t.Fatalf("close_notify record = %x, want an alert record", alert)
	}

	// The data and the alert's first byte in one segment.
	if _, err := nc.Write(append(data, alert[:1]...)); err != nil {
		t.Fatal(err)
	}
	up.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := up.br.ReadString('\n'); err != nil || got != "b NOOP\r\n" {
		t.Fatalf("upstream read %q, %v", got, err)
	}
	select {
	case <-r.ended:
		t.Fatalf("the session ended with the client's alert record incomplete:\n%s", r.logs.String())
	case <-time.After(300 * time.Millisecond):
	}
	if _, err := nc.Write(alert[1:]); err != nil {
		t.Fatal(err)
	}
	select {
	case <-r.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the session did not end at the client's close_notify")
	}
	// The Recorder hears of the end just before the line is logged.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.logs.String(), "outcome=closed") {
		if time.Now().After(deadline) {
			t.Fatalf("the session's end is not logged as the client closing it:\n%s", r.logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the log, with a deadline
	}
}
