package proxy

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/tls"
	"encoding/hex"
	"hash"
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
	up := u.loginThrough(rw)
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

// tls13Writer writes a TLS 1.3 client's application records itself, from
// the client's traffic secret (a key log), so that a test can send what
// crypto/tls's client never sends: a KeyUpdate.
type tls13Writer struct {
	t      *testing.T
	c      net.Conn
	hash   func() hash.Hash
	keyLen int
	secret []byte
	aead   cipher.AEAD
	iv     []byte
	seq    uint64
}

func newTLS13Writer(t *testing.T, c net.Conn, suite uint16, secret []byte) *tls13Writer {
	w := &tls13Writer{t: t, c: c, secret: secret}
	switch suite {
	case tls.TLS_AES_128_GCM_SHA256:
		w.hash, w.keyLen = sha256.New, 16
	case tls.TLS_AES_256_GCM_SHA384:
		w.hash, w.keyLen = sha512.New384, 32
	default:
		t.Skipf("cipher suite %s: the test writes AES-GCM records only", tls.CipherSuiteName(suite))
	}
	w.keys()
	return w
}

// expandLabel is HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
func (w *tls13Writer) expandLabel(label string, n int) []byte {
	l := "tls13 " + label
	info := append([]byte{byte(n >> 8), byte(n), byte(len(l))}, l...)
	info = append(info, 0)
	b, err := hkdf.Expand(w.hash, w.secret, string(info), n)
	if err != nil {
		w.t.Fatal(err)
	}
	return b
}

func (w *tls13Writer) keys() {
	block, err := aes.NewCipher(w.expandLabel("key", w.keyLen))
	if err != nil {
		w.t.Fatal(err)
	}
	if w.aead, err = cipher.NewGCM(block); err != nil {
		w.t.Fatal(err)
	}
	w.iv, w.seq = w.expandLabel("iv", 12), 0
}

// record writes one record of content type typ (RFC 8446 §5.2).
func (w *tls13Writer) record(typ byte, b []byte) {
	w.t.Helper()
	inner := append(bytes.Clone(b), typ)
	n := len(inner) + w.aead.Overhead()
	hdr := []byte{23, 3, 3, byte(n >> 8), byte(n)}
	nonce := bytes.Clone(w.iv)
	for i := range 8 {
		nonce[4+i] ^= byte(w.seq >> (56 - 8*i))
	}
	w.seq++
	if _, err := w.c.Write(w.aead.Seal(hdr, nonce, inner, hdr)); err != nil {
		w.t.Fatal(err)
	}
}

// keyUpdate sends a KeyUpdate asking the server for one back, and moves
// to the next traffic secret (RFC 8446 §4.6.3, §7.2).
func (w *tls13Writer) keyUpdate() {
	w.record(22, []byte{24, 0, 0, 1, 1})
	w.secret = w.expandLabel("traffic upd", w.hash().Size())
	w.keys()
}

// A TLS 1.3 client's KeyUpdate asking for one back, sent when relayd last
// wrote to it longer ago than the write timeout, leaves the session
// working: crypto/tls answers it from the reading side, on the client's
// connection, whose write deadline must not be the stale one of relayd's
// last write (crypto/tls would then fail every later write to the client).
func TestTLSClientKeyUpdate(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	u := newRawUpstream(t, false)
	const wt = 300 * time.Millisecond
	r := newTestRelay(t, relayOpts{upstream: u.start, listenerTLS: c.holder.Config, writeTimeout: wt})
	nc, err := net.DialTimeout("tcp", r.tlsAddr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	var keyLog bytes.Buffer
	cfg := c.client("127.0.0.1")
	cfg.MinVersion = tls.VersionTLS13
	cfg.KeyLogWriter = &keyLog
	tc := tls.Client(nc, cfg)
	tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	var secret []byte
	for _, l := range strings.Split(keyLog.String(), "\n") {
		if f := strings.Fields(l); len(f) == 3 && f[0] == "CLIENT_TRAFFIC_SECRET_0" {
			if secret, err = hex.DecodeString(f[2]); err != nil {
				t.Fatal(err)
			}
		}
	}
	if secret == nil {
		t.Fatalf("no client traffic secret in the key log:\n%s", keyLog.String())
	}
	// The test writes every record from here on; tc only reads.
	w := newTLS13Writer(t, nc, tc.ConnectionState().CipherSuite, secret)
	br := bufio.NewReader(tc)
	line := func() string {
		t.Helper()
		l, err := br.ReadString('\n')
		if err != nil {
			t.Fatalf("reading from relayd: %v (got %q)\n%s", err, l, r.logs.String())
		}
		return strings.TrimRight(l, "\r\n")
	}
	line() // the greeting
	w.record(23, []byte("a LOGIN "+testUser+" "+testPassword+"\r\n"))
	if got := line(); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("LOGIN reply = %q, want a OK", got)
	}
	up := <-u.conns
	rw := &raw{t: t, c: tc, br: br}
	relay(t, up, rw, []byte("* 5 EXISTS\r\n")) // relayd's last write to the client
	time.Sleep(2 * wt)

	w.keyUpdate()
	w.record(23, []byte("b NOOP\r\n"))
	up.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := up.br.ReadString('\n'); err != nil || got != "b NOOP\r\n" {
		t.Fatalf("upstream read %q, %v", got, err)
	}
	relay(t, up, rw, []byte("b OK NOOP completed\r\n"))
}
