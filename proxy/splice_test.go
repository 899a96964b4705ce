package proxy

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/testkit"
)

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (a, b *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// splicedSession is an upstream server end and a downstream client end
// with spliceTCP copying from one to the other, as in a logged-in IMAP
// session's FETCH direction.
type splicedSession struct {
	upServer, downClient *net.TCPConn
	cs                   *clientStream
	done                 chan error
}

func newSplicedSession(t *testing.T) *splicedSession {
	t.Helper()
	upServer, upClient := tcpPair(t)
	downRelay, downClient := tcpPair(t)
	s := &splicedSession{upServer: upServer, downClient: downClient, cs: newClientStream(), done: make(chan error, 1)}
	go func() { s.done <- spliceTCP(downRelay, upClient, time.Minute, s.cs, nil) }()
	return s
}

// pass writes payload upstream and checks that the downstream reads
// exactly it.
func (s *splicedSession) pass(t *testing.T, payload []byte) {
	t.Helper()
	werr := make(chan error, 1)
	go func() { _, err := s.upServer.Write(payload); werr <- err }()
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(s.downClient, got); err != nil {
		t.Fatalf("reading downstream: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("writing upstream: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatal("downstream read other bytes than the upstream wrote")
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// fetchResponse is one FETCH response carrying a body of n random octets
// as a literal.
func fetchResponse(t *testing.T, n int) []byte {
	b := []byte(fmt.Sprintf("* 1 FETCH (UID 7 BODY[] {%d}\r\n", n))
	b = append(b, randomBytes(t, n)...)
	return append(b, ")\r\n"...)
}

// openPipes counts this process's open pipe file descriptors.
func openPipes(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name())); err == nil && strings.HasPrefix(l, "pipe:") {
			n++
		}
	}
	return n
}

func TestSpliceMovesBytesExactly(t *testing.T) {
	s := newSplicedSession(t)
	// Larger than a pipe and a socket buffer, so that splice must wait
	// for the downstream to read: as a literal (spliced) and not.
	s.pass(t, fetchResponse(t, 5<<20+123))
	s.pass(t, randomBytes(t, 5<<20+123))
	s.pass(t, []byte("* 1 EXISTS\r\n"))
	s.upServer.CloseWrite()
	if err := <-s.done; err != nil {
		t.Errorf("spliceTCP at the upstream's end = %v, want nil", err)
	}
}

func TestSpliceHoldsNoPipeWhileIdle(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("splice(2) is Linux only")
	}
	const sessions = 20
	newSplicedSession(t).pass(t, fetchResponse(t, 256<<10)) // the pool's first pipe
	before := openPipes(t)
	all := make([]*splicedSession, sessions)
	for i := range all {
		all[i] = newSplicedSession(t)
		all[i].pass(t, fetchResponse(t, 256<<10))
	}
	// Every session has moved bytes and now waits for its upstream.
	if held := openPipes(t) - before; held > 2 {
		t.Errorf("%d idle spliced sessions hold %d more pipes, want at most 2 (pooled): each pipe costs two file descriptors", sessions, held)
	}
	for _, s := range all {
		s.pass(t, []byte("* OK still here\r\n"))
	}
}

func TestSpliceEndsWhenDownstreamIsGone(t *testing.T) {
	s := newSplicedSession(t)
	s.pass(t, []byte("* OK\r\n"))
	s.downClient.Close()
	// The upstream goes on sending; the splice must fail, not hang.
	chunk := randomBytes(t, 64<<10)
	go func() {
		for {
			if _, err := s.upServer.Write(chunk); err != nil {
				return
			}
		}
	}()
	if err := <-s.done; err == nil {
		t.Error("spliceTCP after the downstream closed = nil, want an error")
	}
	s.upServer.Close()
}

// A client that stops reading while the upstream sends (a big FETCH) must
// not pin the session: the copy ends after the write timeout, whichever
// copy loop moves the bytes.
func TestCopyEndsWhenClientStopsReading(t *testing.T) {
	for name, copyFn := range map[string]func(dst, src *net.TCPConn, wt time.Duration) error{
		"splice": func(dst, src *net.TCPConn, wt time.Duration) error {
			return spliceTCP(dst, src, wt, newClientStream(), nil)
		},
		"coalesce": func(dst, src *net.TCPConn, wt time.Duration) error {
			return copyCoalesce(dst, src, wt, newClientStream(), nil)
		},
		"idle": func(dst, src *net.TCPConn, wt time.Duration) error {
			return copyIdle(dst, src, time.Hour, wt, nil, newClientStream(), nil)
		},
	} {
		t.Run(name, func(t *testing.T) {
			upServer, upClient := tcpPair(t)
			downRelay, _ := tcpPair(t) // its client end never reads
			done := make(chan error, 1)
			go func() { done <- copyFn(downRelay, upClient, 200*time.Millisecond) }()
			go upServer.Write(make([]byte, 256<<20))
			select {
			case err := <-done:
				if !errors.Is(err, errStalled) {
					t.Errorf("copy ended with %v, want errStalled", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("the copy still blocks on a client that reads nothing")
			}
		})
	}
}

// The upstream direction may end right after copyIdle passed a chunk on
// and before it sets its next read deadline: the wake-up must not be lost
// (it was, and the session waited for the idle timeout).
func TestCopyIdleWakeNotLost(t *testing.T) {
	downRelay, downClient := tcpPair(t)
	upRelay, _ := tcpPair(t)
	var stop atomic.Bool
	hook := func() { stop.Store(true); downRelay.SetReadDeadline(time.Now()) }
	idleReadHook.Store(&hook)
	defer idleReadHook.Store(nil)
	done := make(chan error, 1)
	go func() { done <- copyIdle(upRelay, downRelay, time.Hour, time.Minute, &stop, newClientStream(), nil) }()
	downClient.Write([]byte("a NOOP\r\n"))
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("copyIdle missed the other direction's end and waits for the idle timeout")
	}
}

// A client reading a long FETCH or RETR sends nothing while it reads: its
// idle timeout counts from the last byte either way, so a stream longer
// than the idle timeout is not cut (a slow client would otherwise retry
// forever). Once both directions are quiet, the timeout ends the session.
func TestIdleTimeoutSparesAStreamingSession(t *testing.T) {
	const idle = 600 * time.Millisecond // a loaded machine may take a while per chunk
	s := newSplicedSession(t)
	_, upClient2 := tcpPair(t) // the client-to-upstream direction
	downRelay2, _ := tcpPair(t)
	idleDone := make(chan error, 1)
	go func() { idleDone <- copyIdle(upClient2, downRelay2, idle, time.Minute, nil, s.cs, nil) }()
	// The upstream streams for 3 idle periods; the client only reads.
	chunk := randomBytes(t, 4<<10)
	for i := 0; i < 18; i++ {
		s.pass(t, chunk)
		time.Sleep(idle / 6) // the stream's own pace, not a synchronisation
		select {
		case err := <-idleDone:
			t.Fatalf("the idle timeout ended the session after %d chunks while the upstream was still sending: %v", i+1, err)
		default:
		}
	}
	select {
	case err := <-idleDone:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("copyIdle = %v, want the idle deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a quiet session outlived its idle timeout")
	}
}

// A client reading one literal longer than its idle timeout (a large
// attachment, a RETR) is not idle either, although splice(2) then never
// finds the upstream's socket empty until the literal's end: the client
// reads slowly, so the upstream's bytes always wait for it.
func TestIdleTimeoutSparesALongLiteral(t *testing.T) {
	const idle = 600 * time.Millisecond
	upServer, upClient := tcpPair(t)
	downRelay, downClient := tcpPair(t)
	for _, c := range []*net.TCPConn{upServer, upClient, downRelay, downClient} {
		// Small buffers: the upstream's bytes back up behind the
		// client at once.
		c.SetReadBuffer(64 << 10)
		c.SetWriteBuffer(64 << 10)
	}
	cs := newClientStream()
	go spliceTCP(downRelay, upClient, time.Minute, cs, nil)
	_, upClient2 := tcpPair(t) // the client-to-upstream direction
	downRelay2, _ := tcpPair(t)
	idleDone := make(chan error, 1)
	go func() { idleDone <- copyIdle(upClient2, downRelay2, idle, time.Minute, nil, cs, nil) }()
	resp := fetchResponse(t, 4<<20)
	go upServer.Write(resp)
	// The client takes 16 KiB every 10 ms: the literal lasts some 4
	// idle periods.
	got := make([]byte, 0, len(resp))
	buf := make([]byte, 16<<10)
	downClient.SetReadDeadline(time.Now().Add(time.Minute))
	start := time.Now()
	for len(got) < len(resp) {
		n, err := io.ReadFull(downClient, buf[:min(len(buf), len(resp)-len(got))])
		if err != nil {
			t.Fatalf("client reading: %v", err)
		}
		got = append(got, buf[:n]...)
		select {
		case err := <-idleDone:
			t.Fatalf("the idle timeout ended the session %v into the literal, %d of %d octets read, while the client was reading it: %v",
				time.Since(start).Round(time.Millisecond), len(got), len(resp), err)
		default:
		}
		time.Sleep(10 * time.Millisecond) // the client's own pace, not a synchronisation
	}
	if !bytes.Equal(got, resp) {
		t.Fatal("the client read other bytes than the upstream sent")
	}
	select {
	case err := <-idleDone:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("copyIdle = %v, want the idle deadline", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a quiet session outlived its idle timeout")
	}
}

// TestCoalesceMovesBytesExactly: from a TLS upstream (as relayd dials it,
// over a gatherConn), copyCoalesce passes every octet in order, whether
// the records come in bursts larger than its buffer, trickle in one by one
// (a wait for the socket between them) or stop halfway through a record,
// and it ends with the upstream's close_notify.
func TestCoalesceMovesBytesExactly(t *testing.T) {
	cert, pemBytes, err := testkit.SelfSigned("127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	upServer, upClient := tcpPair(t)
	downRelay, downClient := tcpPair(t)
	srv := tls.Server(upServer, &tls.Config{Certificates: []tls.Certificate{cert}})
	acct := &auth.Account{RootCAs: x509Pool(pemBytes)}
	up := upstreamTLS(upClient, acct.TLSConfig("127.0.0.1"))
	done := make(chan error, 1)
	go func() {
		done <- copyCoalesce(downRelay, up, time.Minute, newClientStream(), nil)
		downRelay.Close()
	}()
	var want []byte
	writes := make(chan error, 1)
	go func() {
		defer close(writes)
		send := func(b []byte) bool {
			want = append(want, b...)
			_, err := srv.Write(b)
			if err != nil {
				writes <- err
			}
			return err == nil
		}
		if !send(fetchResponse(t, 3<<20+17)) { // bursts beyond 256 KiB
			return
		}
		for i := 0; i < 50; i++ { // one small record at a time
			if !send([]byte(fmt.Sprintf("* %d EXISTS\r\n", i))) {
				return
			}
			time.Sleep(time.Millisecond)
		}
		srv.Close() // close_notify
	}()
	got, err := io.ReadAll(downClient)
	if err != nil {
		t.Fatalf("reading downstream: %v", err)
	}
	for err := range writes {
		t.Fatalf("writing upstream: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("downstream read %d octets other than the %d the upstream wrote", len(got), len(want))
	}
	if err := <-done; err != nil && err != io.EOF {
		t.Errorf("copyCoalesce at the upstream's end = %v, want nil or EOF", err)
	}
}
