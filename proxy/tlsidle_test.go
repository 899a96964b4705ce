package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"unsafe"

	"github.com/relayd/relayd/internal/testkit"
)

// tlsBufferCaps returns the capacity of c's raw-input and handshake
// buffers.
func tlsBufferCaps(c *tls.Conn) (raw, hand int) {
	p := unsafe.Pointer(c)
	return (*bytes.Buffer)(unsafe.Add(p, tlsFields.raw)).Cap(), (*bytes.Buffer)(unsafe.Add(p, tlsFields.hand)).Cap()
}

// tlsPair is a TLS 1.3 connection on loopback: relayd's client end, over
// wrap(the socket), and the server's.
func tlsPair(t *testing.T, wrap func(net.Conn) net.Conn) (client, server *tls.Conn) {
	t.Helper()
	cert, pemBytes, err := testkit.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *tls.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			accepted <- nil
			return
		}
		sc := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		sc.Handshake()
		accepted <- sc
	}()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemBytes)
	client = tls.Client(wrap(raw), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		t.Fatal("no server end")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// The read buffers of an idle TLS connection are given back, and the
// connection reads on as before; buffers holding input are kept. If a Go
// release changes tls.Conn so that the fields are not found, this fails:
// relayd would still work, but parked sessions would hold their buffers.
func TestTLSBuffersReleased(t *testing.T) {
	if !tlsFields.ok {
		t.Fatal("crypto/tls's read buffers were not found in tls.Conn: see releaseTLSBuffers")
	}
	client, server := tlsPair(t, newGatherConn)
	big := bytes.Repeat([]byte("x"), 128<<10) // full records, past Go's dynamic record sizing
	go server.Write(big)
	got := make([]byte, len(big))
	if _, err := io.ReadFull(client, got); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("read %d bytes, %v", len(got), err)
	}
	if raw, _ := tlsBufferCaps(client); raw < 16<<10 {
		t.Fatalf("raw input buffer %d bytes after a full record, want at least 16 KB", raw)
	}
	raw, hand := tlsBufferCaps(client)
	t.Logf("given back: raw input %d bytes, handshake %d bytes", raw, hand)
	if !releaseTLSBuffers(client) {
		t.Fatal("an idle connection's buffers were not given back")
	}
	if raw, hand := tlsBufferCaps(client); raw != 0 || hand != 0 {
		t.Fatalf("buffers of %d and %d bytes after the release, want none", raw, hand)
	}

	// Part of a record's plaintext still unread: nothing is given back.
	go server.Write([]byte("0123456789abcdefghij"))
	part := make([]byte, 10)
	if _, err := io.ReadFull(client, part); err != nil {
		t.Fatal(err)
	}
	if releaseTLSBuffers(client) {
		t.Fatal("buffers holding unread input were given back")
	}
	rest := make([]byte, 10)
	if _, err := io.ReadFull(client, rest); err != nil || string(part)+string(rest) != "0123456789abcdefghij" {
		t.Fatalf("read %q%q, %v", part, rest, err)
	}

	// Writing is untouched, and so is a lazily handshaken client end.
	go io.WriteString(client, "ping")
	ping := make([]byte, 4)
	if _, err := io.ReadFull(server, ping); err != nil || string(ping) != "ping" {
		t.Fatalf("server read %q, %v", ping, err)
	}
	if releaseTLSBuffers(&lazyTLSConn{}) {
		t.Error("a TLS client that never handshook was released")
	}
}

// stallConn passes at most limit bytes on, then fails reads as a read
// deadline would (a temporary error, after which crypto/tls keeps its
// state), until limit is set back to 0.
type stallConn struct {
	net.Conn
	limit, passed int
}

func (c *stallConn) Read(p []byte) (int, error) {
	if c.limit == 0 {
		return c.Conn.Read(p)
	}
	if c.passed >= c.limit {
		return 0, os.ErrDeadlineExceeded
	}
	p = p[:min(len(p), c.limit-c.passed)]
	n, err := c.Conn.Read(p)
	c.passed += n
	return n, err
}

// A record that has only begun to arrive is kept: crypto/tls holds its
// first bytes in the raw-input buffer, and they are not given back.
func TestTLSBuffersKeepAPartialRecord(t *testing.T) {
	var sc *stallConn
	client, server := tlsPair(t, func(c net.Conn) net.Conn { sc = &stallConn{Conn: c}; return sc })

	const msg = "0123456789abcdefghij"
	if _, err := io.WriteString(server, msg); err != nil {
		t.Fatal(err)
	}
	sc.limit = 10 // the record's header and a few bytes
	buf := make([]byte, 64)
	if n, err := client.Read(buf); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read of a partial record = %d, %v; want 0, deadline exceeded", n, err)
	}
	if releaseTLSBuffers(client) {
		t.Fatal("the first bytes of a record were given back")
	}
	sc.limit = 0
	n, err := client.Read(buf)
	if err != nil || string(buf[:n]) != msg {
		t.Fatalf("read %q, %v; want %q", buf[:n], err, msg)
	}
	// A lazy TLS client that did its handshake is released too.
	if !releaseTLSBuffers(&lazyTLSConn{tc: client}) {
		t.Error("a lazy TLS client's buffers were not given back")
	}
}
