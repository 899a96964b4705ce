package proxy

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"unsafe"

	"github.com/relayd/relayd/internal/testkit"
)

// TestTLSBufferFields fails when a Go release changes the crypto/tls fields
// releaseTLSBuffers relies on (relayd would then keep the buffers, as
// before: correct, but 3 KiB more per idle session).
func TestTLSBufferFields(t *testing.T) {
	if !tlsBufferFields.ok {
		t.Fatal("crypto/tls.Conn has no rawInput, hand (bytes.Buffer) and input (bytes.Reader) any more: update releaseTLSBuffers")
	}
}

// TestReleaseTLSBuffers: a connection whose buffers were let go of reads
// and writes on exactly as before, records split across reads included.
func TestReleaseTLSBuffers(t *testing.T) {
	cert, _, _ := testkit.SelfSigned("127.0.0.1")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	msgs := [][]byte{[]byte("* OK ready\r\n"), bytes.Repeat([]byte("x"), 40000), []byte("* 1 EXISTS\r\n")}
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s := tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		defer s.Close()
		for _, m := range msgs {
			s.Write(m)
			var b [1]byte
			if _, err := s.Read(b[:]); err != nil { // the client's go-ahead
				return
			}
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	tc := tls.Client(c, &tls.Config{InsecureSkipVerify: true})
	defer tc.Close()
	raw := func() *bytes.Buffer {
		return (*bytes.Buffer)(unsafe.Add(unsafe.Pointer(tc), tlsBufferFields.rawInput))
	}
	for i, m := range msgs {
		got := make([]byte, len(m))
		if _, err := io.ReadFull(tc, got); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if !bytes.Equal(got, m) {
			t.Fatalf("message %d differs after the buffers were let go of", i)
		}
		releaseTLSBuffers(tc)
		if raw().Cap() != 0 {
			t.Fatalf("message %d: rawInput keeps %d bytes of buffer after release", i, raw().Cap())
		}
		tc.Write([]byte("."))
	}
}
