package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"
)

// waitParked waits until n directions are parked and no copy loop of a
// session is left waiting in a goroutine.
func waitParked(t *testing.T, n int) {
	t.Helper()
	waitParkedWith(t, n, 0)
}

// waitParkedWith waits until n directions are parked and loops
// goroutines serve sessions.
func waitParkedWith(t *testing.T, n, loops int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		got, l := parkedNow(), copyLoops()
		if got == n && l == loops {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d directions parked and %d goroutines serving sessions; want %d and %d", got, l, n, loops)
		}
		time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
	}
}

// copyLoops counts the goroutines serving a session: in a copy loop, the
// splice, or the session's own code.
func copyLoops() int {
	buf := make([]byte, 4<<20)
	buf = buf[:runtime.Stack(buf, true)]
	n := 0
	for _, g := range bytes.Split(buf, []byte("\n\n")) {
		for _, f := range []string{"proxy.copyIdle", "proxy.copyCoalesce", "proxy.spliceTCP", "proxy.(*splice)", "proxy.(*imapSession)"} {
			if bytes.Contains(g, []byte(f)) {
				n++
				break
			}
		}
	}
	return n
}

// A quiet session holds no goroutine: both directions park, and each
// wakes when its side sends, as often as it sends, whichever way the
// upstream is reached.
func TestParkedSessionWakes(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		name := map[bool]string{false: "plaintext upstream", true: "TLS upstream"}[useTLS]
		t.Run(name, func(t *testing.T) {
			u := newRawUpstream(t, useTLS)
			r := newTestRelay(t, relayOpts{upstream: u.start, tls: useTLS})
			released := tlsReleases.Load()
			rw, up := u.session(r)
			for range 3 {
				waitParked(t, 2)
				// A parked TLS upstream holds no read buffer.
				if useTLS && tlsReleases.Load() == released {
					t.Fatal("the TLS upstream parked with its read buffers")
				}
				released = tlsReleases.Load()
				// The client's side wakes.
				rw.send("b NOOP\r\n")
				if got, err := up.br.ReadString('\n'); err != nil || got != "b NOOP\r\n" {
					t.Fatalf("upstream read %q, %v", got, err)
				}
				waitParked(t, 2)
				// The upstream's side wakes, with the bytes whole.
				relay(t, up, rw, []byte("* 4 EXISTS\r\nb OK NOOP completed\r\n"))
				// Both at once.
				rw.send("c IDLE\r\n")
				relay(t, up, rw, []byte("+ idling\r\n"))
				if got, err := up.br.ReadString('\n'); err != nil || got != "c IDLE\r\n" {
					t.Fatalf("upstream read %q, %v", got, err)
				}
			}
		})
	}
}

// A parked session still ends every way a waiting one does.
func TestParkedSessionEnds(t *testing.T) {
	for _, tc := range []struct {
		name    string
		idle    time.Duration
		end     func(r *testRelay, up *upstreamEnd)
		outcome string
		client  string // what the client reads before the end
	}{
		{"client idle timeout", 3 * time.Second, nil, "idle timeout", ""},
		{"upstream closes", 0, func(_ *testRelay, up *upstreamEnd) { up.Close() }, "upstream closed", ""},
		{"server closes", 0, func(r *testRelay, _ *upstreamEnd) { r.srv.Close() }, "", ""},
		{"shutdown's grace period ends", 0, func(r *testRelay, _ *upstreamEnd) {
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			r.srv.Shutdown(ctx)
		}, "shutdown", shutdownBye},
		{"account removed", 0, func(r *testRelay, _ *upstreamEnd) { r.srv.EndAccount(r.acct.Config.Name, "gone") }, "account removed", "* BYE gone\r\n"},
	} {
		for _, useTLS := range []bool{false, true} {
			t.Run(tc.name+map[bool]string{false: "/plaintext upstream", true: "/TLS upstream"}[useTLS], func(t *testing.T) {
				u := newRawUpstream(t, useTLS)
				r := newTestRelay(t, relayOpts{upstream: u.start, tls: useTLS, idleTimeout: tc.idle})
				rw, up := u.session(r)
				waitParked(t, 2)
				if tc.end != nil {
					go tc.end(r, up)
				}
				rw.c.SetReadDeadline(time.Now().Add(10 * time.Second))
				if got := rw.rest(); got != tc.client {
					t.Errorf("the client read %q before the end, want %q", got, tc.client)
				}
				select {
				case <-r.ended:
				case <-time.After(10 * time.Second):
					t.Fatal("the session's end was not counted")
				}
				if tc.outcome != "" && tc.outcome != "shutdown" {
					// The Recorder hears of the end just before
					// the line is logged.
					want := `outcome="` + tc.outcome + `"`
					deadline := time.Now().Add(10 * time.Second)
					for !strings.Contains(r.logs.String(), want) && time.Now().Before(deadline) {
						time.Sleep(5 * time.Millisecond) // polling a condition, with a deadline
					}
					if !strings.Contains(r.logs.String(), want) {
						t.Errorf("log has no outcome=%q:\n%s", tc.outcome, r.logs.String())
					}
				}
				waitParked(t, 0) // and no goroutine of the session left
				// The upstream's end is closed too.
				up.SetReadDeadline(time.Now().Add(10 * time.Second))
				if _, err := io.Copy(io.Discard, up); err != nil && !errors.Is(err, io.EOF) && !strings.Contains(err.Error(), "closed") {
					t.Errorf("upstream's end: %v, want it closed", err)
				}
			})
		}
	}
}

// A TLS client's session parks too, both directions, with a plaintext
// upstream and a TLS one, implicit TLS and STARTTLS; bytes crypto/tls
// decrypted ahead are passed on before the client's direction waits.
func TestParkedTLSClient(t *testing.T) {
	for _, useTLS := range []bool{false, true} {
		for _, starttls := range []bool{false, true} {
			name := map[bool]string{false: "plaintext upstream", true: "TLS upstream"}[useTLS] +
				map[bool]string{false: "/implicit TLS", true: "/STARTTLS"}[starttls]
			t.Run(name, func(t *testing.T) {
				c := newTestCert(t, "127.0.0.1")
				u := newRawUpstream(t, useTLS)
				r := newTestRelay(t, relayOpts{upstream: u.start, tls: useTLS, listenerTLS: c.holder.Config})
				var rw *raw
				if starttls {
					rw = r.rawTLSAware()
					rw.send("s STARTTLS\r\n")
					if got := rw.line(); !strings.HasPrefix(got, "s OK") {
						t.Fatalf("STARTTLS reply = %q", got)
					}
					tc := tls.Client(rw.c, c.client("127.0.0.1"))
					rw = &raw{t: t, c: tc, br: bufio.NewReader(tc)}
				} else {
					rw, _ = tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
					rw.line() // the greeting
				}
				released := tlsReleases.Load()
				up := u.loginThrough(rw)
				for range 2 {
					waitParked(t, 2)
					// The client's, and the upstream's when it is TLS.
					wantReleased := int64(1)
					if useTLS {
						wantReleased = 2
					}
					if n := tlsReleases.Load() - released; n < wantReleased {
						t.Fatalf("%d TLS connections gave their read buffers back as the session parked, want %d", n, wantReleased)
					}
					released = tlsReleases.Load()
					relay(t, up, rw, []byte("* 5 EXISTS\r\n"))
					rw.send("b NOOP\r\n")
					if got, err := up.br.ReadString('\n'); err != nil || got != "b NOOP\r\n" {
						t.Fatalf("upstream read %q, %v", got, err)
					}
					// Several records in one go: crypto/tls reads
					// ahead, and each must reach the upstream.
					want := ""
					for i := range 20 {
						l := fmt.Sprintf("c%d NOOP\r\n", i)
						want += l
						rw.send(l)
					}
					got := make([]byte, len(want))
					up.SetReadDeadline(time.Now().Add(10 * time.Second))
					if _, err := io.ReadFull(up.br, got); err != nil || string(got) != want {
						t.Fatalf("upstream read %q, %v; want %q", got, err, want)
					}
				}
			})
		}
	}
}

// panicWriteConn is a client's connection whose Write panics when what is
// written holds marker: a stand-in for a panic anywhere in a splice's
// first flush (the line tracker reading the upstream's bytes, the watch
// over the client's, a TLS write).
type panicWriteConn struct {
	net.Conn
	marker []byte
}

func (c panicWriteConn) Write(b []byte) (int, error) {
	if bytes.Contains(b, c.marker) {
		panic("a write of the splice's first flush panicked")
	}
	return c.Conn.Write(b)
}

// panicWriteListener hands out panicWriteConns.
type panicWriteListener struct {
	net.Listener
	marker []byte
}

func (l *panicWriteListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return panicWriteConn{c, l.marker}, nil
}

// A panic while the splice passes on what the logins left buffered is
// recovered like a panic anywhere else in a session: it ends the session
// (counted, its connections closed) and not relayd.
func TestSpliceFlushPanicIsRecovered(t *testing.T) {
	const marker = "PANIC-IN-FLUSH"
	u := newRawUpstream(t, false)
	u.afterLogin = "* 1 EXISTS " + marker + "\r\n" // in the login's read: flushed first
	r := newTestRelay(t, relayOpts{upstream: u.start, panics: 1})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- r.srv.Serve(&panicWriteListener{ln, []byte(marker)}) }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	rw := &raw{t: t, c: c, br: bufio.NewReader(c)}
	rw.line() // the greeting
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "a OK ") {
		t.Fatalf("LOGIN reply = %q, want a OK", got)
	}
	select {
	case <-r.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the session's end was not counted")
	}
	if got := rw.rest(); got != "" {
		t.Errorf("the client read %q after its login, want the connection closed", got)
	}
	r.srv.Close()
	if err := <-served; err != ErrServerClosed {
		t.Errorf("Serve() = %v, want ErrServerClosed", err)
	}
}

// A parked TLS client's session still ends at its idle timeout, and the
// upstream's end too.
func TestParkedTLSClientIdleTimeout(t *testing.T) {
	c := newTestCert(t, "127.0.0.1")
	u := newRawUpstream(t, true)
	r := newTestRelay(t, relayOpts{upstream: u.start, tls: true, listenerTLS: c.holder.Config, idleTimeout: 2 * time.Second})
	rw, _ := tlsRaw(t, r.tlsAddr, c.client("127.0.0.1"))
	rw.line() // the greeting
	up := u.loginThrough(rw)
	waitParked(t, 2)
	rw.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got := rw.rest(); got != "" {
		t.Errorf("the client read %q before the end, want nothing", got)
	}
	select {
	case <-r.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the session's end was not counted")
	}
	waitParked(t, 0)
	up.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, up); err != nil && !strings.Contains(err.Error(), "closed") {
		t.Errorf("upstream's end: %v, want it closed", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(r.logs.String(), `outcome="idle timeout"`) {
		if time.Now().After(deadline) {
			t.Fatalf("no idle timeout logged:\n%s", r.logs.String())
		}
		time.Sleep(10 * time.Millisecond) // polling the log, with a deadline
	}
}
