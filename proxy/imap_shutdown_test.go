package proxy

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// rawUpstream is an upstream IMAP server a test drives by hand: it logs
// relayd in (any XOAUTH2 response will do) and hands each connection over.
type rawUpstream struct {
	t     *testing.T
	tls   bool
	conns chan *upstreamEnd
	// afterLogin is sent right behind the login's tagged OK, in the same
	// write: relayd's login reads it along, and the splice passes it on
	// first.
	afterLogin string
	// greetAfter delays each greeting: a slow server.
	greetAfter time.Duration
}

// upstreamEnd is the upstream's end of a logged-in session.
type upstreamEnd struct {
	net.Conn
	br *bufio.Reader
}

func newRawUpstream(t *testing.T, useTLS bool) *rawUpstream {
	return &rawUpstream{t: t, tls: useTLS, conns: make(chan *upstreamEnd, 4)}
}

// start listens on loopback; it is relayOpts.upstream.
func (u *rawUpstream) start(*testkit.IdP) (addr string, caPEM []byte) {
	t := u.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var cfg *tls.Config
	if u.tls {
		cert, pemBytes, err := testkit.SelfSigned("127.0.0.1")
		if err != nil {
			t.Fatal(err)
		}
		cfg, caPEM = &tls.Config{Certificates: []tls.Certificate{cert}}, pemBytes
	}
	done := make(chan struct{})
	var accepted []net.Conn // the accept loop's until done
	t.Cleanup(func() {
		ln.Close()
		<-done
		for _, c := range accepted {
			c.Close()
		}
	})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted = append(accepted, c)
			if cfg != nil {
				c = tls.Server(c, cfg)
			}
			time.Sleep(u.greetAfter) // a slow server, not synchronization
			io.WriteString(c, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=XOAUTH2] raw upstream ready\r\n")
			br := bufio.NewReader(c)
			line, err := br.ReadString('\n')
			if err != nil {
				continue
			}
			tag, _, _ := strings.Cut(line, " ")
			io.WriteString(c, tag+" OK [CAPABILITY IMAP4rev1 IDLE COMPRESS=DEFLATE] logged in\r\n"+u.afterLogin)
			u.conns <- &upstreamEnd{Conn: c, br: br}
		}
	}()
	return ln.Addr().String(), caPEM
}

// session logs a raw client in through relayd and returns it with the
// upstream's end of its session.
func (u *rawUpstream) session(r *testRelay) (*raw, *upstreamEnd) {
	r.t.Helper()
	rw := r.raw()
	return rw, u.loginThrough(rw)
}

// loginThrough logs rw, a client past relayd's greeting, in through relayd
// and returns the upstream's end of its session.
func (u *rawUpstream) loginThrough(rw *raw) *upstreamEnd {
	rw.t.Helper()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	if got := rw.line(); !strings.HasPrefix(got, "a OK ") {
		rw.t.Fatalf("LOGIN reply = %q, want a OK", got)
	}
	return <-u.conns
}

// relay has the upstream send b and the client read exactly b.
func relay(t *testing.T, up *upstreamEnd, rw *raw, b []byte) {
	t.Helper()
	werr := make(chan error, 1)
	go func() { _, err := up.Write(b); werr <- err }()
	got := make([]byte, len(b))
	if _, err := io.ReadFull(rw.br, got); err != nil {
		t.Fatalf("client reading what the upstream sent: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("upstream writing: %v", err)
	}
	if !bytes.Equal(got, b) {
		t.Fatal("the client read other bytes than the upstream sent")
	}
}

// rest reads what the client gets until the connection ends.
func (rw *raw) rest() string {
	rw.t.Helper()
	b, err := io.ReadAll(rw.br)
	if err != nil {
		rw.t.Fatalf("reading to the end: %v (got %q)", err, b)
	}
	return string(b)
}

const shutdownBye = "* BYE [UNAVAILABLE] relayd is shutting down\r\n"

// When the grace period ends, a spliced session whose upstream left the
// client at a line boundary gets a BYE before it closes; one inside a
// literal, inside a line or after COMPRESS is closed without one. Each
// case has a second session idle at a line boundary beside it, which must
// get the BYE, through both copy loops (splice(2) from a plaintext
// upstream, buffered from a TLS one).
func TestShutdownByeAtLineBoundary(t *testing.T) {
	for _, tc := range []struct {
		name string
		// client, when set, is a command the client sends (and the
		// upstream reads) before the upstream sends send.
		client string
		send   func(t *testing.T) []byte
		want   string // what the client reads after send
	}{
		{"idle at a line boundary", "", func(*testing.T) []byte { return []byte("* 1 EXISTS\r\n") }, shutdownBye},
		{"after a large literal", "", func(t *testing.T) []byte { return fetchResponse(t, 3<<20+17) }, shutdownBye},
		{"stalled inside a literal", "", func(t *testing.T) []byte {
			return append([]byte("* 1 FETCH (BODY[] {100}\r\n"), randomBytes(t, 40)...)
		}, ""},
		{"stalled inside a line", "", func(*testing.T) []byte { return []byte(`* 1 FETCH (FLAGS (\Seen`) }, ""},
		{"after COMPRESS", "b COMPRESS DEFLATE\r\n", func(*testing.T) []byte { return []byte("b OK DEFLATE active\r\n") }, ""},
	} {
		for _, useTLS := range []bool{false, true} {
			name := tc.name + "/plaintext upstream"
			if useTLS {
				name = tc.name + "/TLS upstream"
			}
			t.Run(name, func(t *testing.T) {
				u := newRawUpstream(t, useTLS)
				r := newTestRelay(t, relayOpts{upstream: u.start, tls: useTLS})
				other, otherUp := u.session(r)
				relay(t, otherUp, other, []byte("* 2 EXISTS\r\n"))
				rw, up := u.session(r)
				if tc.client != "" {
					rw.send(tc.client)
					if got, err := up.br.ReadString('\n'); err != nil || got != tc.client {
						t.Fatalf("upstream read %q, %v; want %q", got, err, tc.client)
					}
				}
				relay(t, up, rw, tc.send(t))

				ctx, cancel := context.WithCancel(context.Background())
				cancel() // the grace period is over at once
				if err := r.srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
					t.Errorf("Shutdown() = %v, want context.Canceled", err)
				}
				if got := rw.rest(); got != tc.want {
					t.Errorf("the client read %q before the end, want %q", got, tc.want)
				}
				if got := other.rest(); got != shutdownBye {
					t.Errorf("the session idle at a line boundary read %q before the end, want %q", got, shutdownBye)
				}
			})
		}
	}
}

// A reload that removes an account ends its spliced sessions: a session
// idle at a line boundary hears why; one stalled inside a literal is
// closed without a BYE in the middle of the message.
func TestEndAccountByeAtLineBoundary(t *testing.T) {
	u := newRawUpstream(t, false)
	r := newTestRelay(t, relayOpts{upstream: u.start})
	idle, idleUp := u.session(r)
	relay(t, idleUp, idle, []byte("* 2 EXISTS\r\n"))
	inLiteral, inLiteralUp := u.session(r)
	relay(t, inLiteralUp, inLiteral, append([]byte("* 1 FETCH (BODY[] {100}\r\n"), randomBytes(t, 40)...))

	const why = `mailbox "support" was removed from relayd's configuration`
	if n := r.srv.EndAccount("support", why); n != 2 {
		t.Errorf("EndAccount() = %d sessions, want 2", n)
	}
	if got, want := idle.rest(), "* BYE "+why+"\r\n"; got != want {
		t.Errorf("idle session read %q, want %q", got, want)
	}
	if got := inLiteral.rest(); got != "" {
		t.Errorf("session inside a literal read %q, want nothing before the end", got)
	}
}
