package proxy

import (
	"bytes"
	"crypto/tls"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"
)

// crypto/tls keeps the read buffers of a connection for as long as the
// connection lives: the raw-input buffer grown to the largest record read
// (16 KB after one FETCH of a large message), and the handshake buffer
// grown to the server's certificate chain. A session parked for hours
// holds both though it will read nothing until its socket wakes. There is
// no API to give them back, so releaseTLSBuffers does what crypto/tls
// would do for a new connection: it sets them to their zero values, and
// only when they hold nothing (an empty buffer has no content to lose;
// its capacity is all that goes).
//
// It reaches into the unexported fields of tls.Conn. That is done with
// care: the fields are found once, by name and exact type, and if any is
// missing or changed (a Go release reworked tls.Conn) release is a no-op
// and TestTLSBuffersReleased fails, so the change is seen. The buffers are
// only touched under the connection's input lock (the lock its Read
// holds), taken with TryLock so a parker never waits.
var tlsFields = func() (f struct {
	ok                   bool
	in, raw, input, hand uintptr
}) {
	t := reflect.TypeFor[tls.Conn]()
	field := func(name string, want reflect.Type) (uintptr, bool) {
		sf, ok := t.FieldByName(name)
		if !ok || len(sf.Index) != 1 || (want != nil && sf.Type != want) {
			return 0, false
		}
		return sf.Offset, true
	}
	in, ok1 := field("in", nil)
	raw, ok2 := field("rawInput", reflect.TypeFor[bytes.Buffer]())
	input, ok3 := field("input", reflect.TypeFor[bytes.Reader]())
	hand, ok4 := field("hand", reflect.TypeFor[bytes.Buffer]())
	if !ok1 || !ok2 || !ok3 || !ok4 {
		return f
	}
	// in is a halfConn, whose first field is its embedded sync.Mutex.
	sf, _ := t.FieldByName("in")
	if sf.Type.Kind() != reflect.Struct || sf.Type.NumField() == 0 {
		return f
	}
	if m := sf.Type.Field(0); !m.Anonymous || m.Type != reflect.TypeFor[sync.Mutex]() || m.Offset != 0 {
		return f
	}
	f.ok, f.in, f.raw, f.input, f.hand = true, in, raw, input, hand
	return f
}()

// releaseTLSBuffers gives back the read buffers of c, a TLS connection
// (or the lazy one of a TLS client), when it holds no input: before its
// reader parks. It reports whether it did.
func releaseTLSBuffers(c net.Conn) bool {
	var tc *tls.Conn
	switch v := c.(type) {
	case *tls.Conn:
		tc = v
	case *lazyTLSConn:
		tc = v.tc
	}
	if tc == nil || !tlsFields.ok {
		return false
	}
	p := unsafe.Pointer(tc)
	in := (*sync.Mutex)(unsafe.Add(p, tlsFields.in))
	if !in.TryLock() {
		return false
	}
	defer in.Unlock()
	raw := (*bytes.Buffer)(unsafe.Add(p, tlsFields.raw))
	input := (*bytes.Reader)(unsafe.Add(p, tlsFields.input))
	hand := (*bytes.Buffer)(unsafe.Add(p, tlsFields.hand))
	if raw.Len() != 0 || input.Len() != 0 || hand.Len() != 0 {
		return false
	}
	if raw.Cap() == 0 && hand.Cap() == 0 {
		return true
	}
	*raw = bytes.Buffer{}
	input.Reset(nil) // it pointed into raw's memory
	*hand = bytes.Buffer{}
	tlsReleases.Add(1)
	return true
}

// tlsReleases counts the connections whose buffers were given back
// (tests).
var tlsReleases atomic.Int64
