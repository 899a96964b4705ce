package proxy

import (
	"bytes"
	"crypto/tls"
	"reflect"
	"unsafe"
)

// crypto/tls keeps its read buffers for the connection's life: the raw
// records (rawInput, grown to the largest read: the server's handshake
// flight, a 16 KiB record), the handshake messages (hand: the certificate
// chain) and the reader over the last plaintext (input), about 3 KiB per
// idle upstream connection even when all are empty. It has no API to let
// them go, so releaseTLSBuffers drops them when they are empty, through
// the fields' offsets, found once by reflection and used only when the
// fields exist with the types expected (TestTLSBufferFields fails
// otherwise, so a Go release that changes them is noticed, and relayd then
// only keeps the buffers, as before).
var tlsBufferFields = func() (f struct {
	rawInput, hand, input uintptr
	ok                    bool
}) {
	t := reflect.TypeFor[tls.Conn]()
	raw, ok1 := t.FieldByName("rawInput")
	hand, ok2 := t.FieldByName("hand")
	input, ok3 := t.FieldByName("input")
	buf, rd := reflect.TypeFor[bytes.Buffer](), reflect.TypeFor[bytes.Reader]()
	if !ok1 || !ok2 || !ok3 || raw.Type != buf || hand.Type != buf || input.Type != rd {
		return f
	}
	f.rawInput, f.hand, f.input, f.ok = raw.Offset, hand.Offset, input.Offset, true
	return f
}()

// releaseTLSBuffers lets go of c's empty read buffers. Only the goroutine
// that reads c may call it, between reads, after the handshake: nothing
// else touches these buffers then.
func releaseTLSBuffers(c *tls.Conn) {
	f := tlsBufferFields
	if !f.ok {
		return
	}
	p := unsafe.Pointer(c)
	in := (*bytes.Reader)(unsafe.Add(p, f.input))
	raw := (*bytes.Buffer)(unsafe.Add(p, f.rawInput))
	if in.Len() == 0 && raw.Len() == 0 {
		// input reads from rawInput's array: both go, or neither.
		*in = bytes.Reader{}
		*raw = bytes.Buffer{}
	}
	if hand := (*bytes.Buffer)(unsafe.Add(p, f.hand)); hand.Len() == 0 {
		*hand = bytes.Buffer{}
	}
}
