package proxy

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
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

// tlsPair is a TLS 1.3 connection on loopback: relayd's client end and
// the server's.
func tlsPair(t *testing.T) (client, server *tls.Conn) {
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
	cfg := &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}
	client = upstreamTLS(raw, cfg)
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
	client, server := tlsPair(t)
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
