package proxy

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2"

	"github.com/relayd/relayd/internal/testkit"
)

// faultProxy stands between relayd and a fake upstream and breaks the
// connection the way a real upstream or network does: it passes the
// upstream's bytes one at a time (trickle), or closes both sides once a
// marker has gone past in one direction (the first connection only).
type faultProxy struct {
	t      *testing.T
	ln     net.Listener
	target string
	// trickle, when set, is the pause after each byte from the upstream.
	trickle time.Duration
	// cutDown closes the connection once the upstream sent it (towards
	// relayd); cutUp once relayd sent it (towards the upstream).
	cutDown, cutUp []byte
	cut            atomic.Bool // a connection was cut
	conns          atomic.Int32
	wg             sync.WaitGroup
}

func startFaultProxy(t *testing.T, target string, fp *faultProxy) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fp.t, fp.ln, fp.target = t, ln, target
	fp.wg.Add(1)
	go func() {
		defer fp.wg.Done()
		for {
			down, err := ln.Accept()
			if err != nil {
				return
			}
			fp.conns.Add(1)
			fp.wg.Add(1)
			go func() { defer fp.wg.Done(); fp.serve(down) }()
		}
	}()
	t.Cleanup(func() { ln.Close(); fp.wg.Wait() })
	return ln.Addr().String()
}

func (fp *faultProxy) serve(down net.Conn) {
	up, err := net.Dial("tcp", fp.target)
	if err != nil {
		down.Close()
		return
	}
	closeBoth := func() { down.Close(); up.Close() }
	cutThis := !fp.cut.Load()
	var once sync.Once
	pass := func(dst, src net.Conn, marker []byte, trickle time.Duration) {
		defer once.Do(closeBoth)
		var seen []byte // what went past, for the marker
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			b := buf[:n]
			if cutThis && marker != nil {
				seen = append(seen, b...)
				if i := bytes.Index(seen, marker); i >= 0 && fp.cut.CompareAndSwap(false, true) {
					// Pass up to the end of the marker, then cut.
					end := len(b) - (len(seen) - (i + len(marker)))
					dst.Write(b[:max(end, 0)])
					return
				}
			}
			if trickle > 0 {
				for j := range b {
					if _, werr := dst.Write(b[j : j+1]); werr != nil {
						return
					}
					time.Sleep(trickle) // the fault: an upstream this slow
				}
			} else if _, werr := dst.Write(b); werr != nil {
				return
			}
			if err != nil {
				return
			}
		}
	}
	go pass(up, down, fp.cutUp, 0)
	pass(down, up, fp.cutDown, fp.trickle)
}

// An upstream answering one byte at a time (here every 20 ms, and an
// upstream timeout of 300 ms: a 1-byte-per-second upstream against the
// default 30 s is the same race, 50 times slower): relayd gives up at its
// upstream timeout, counted from the dial, not per byte, and tells the
// client to come back later instead of holding it for ever.
func TestIMAPUpstreamOneByteAtATime(t *testing.T) {
	fp := &faultProxy{trickle: 20 * time.Millisecond}
	r := newTestRelay(t, relayOpts{upstreamTimeout: 300 * time.Millisecond, upstream: func(idp *testkit.IdP) (string, []byte) {
		up, err := testkit.NewIMAPUpstream(idp, testkit.IMAPOptions{})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { up.Close() })
		up.AddUser(testMailbox)
		return startFaultProxy(t, up.Addr, fp), nil
	}})
	rw := r.raw()
	start := time.Now()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\n")
	want := "a NO [UNAVAILABLE] the mail server is unreachable; try again later"
	if got := rw.line(); got != want {
		t.Errorf("LOGIN through a trickling upstream = %q, want %q", got, want)
	}
	// The greeting alone (about 100 bytes) takes 2 s at this pace; a
	// per-read timeout would never fire.
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("the answer took %s, want about the upstream timeout (300ms)", took)
	}
	// The admin sees the account degraded, the server named, and why.
	if l := r.logs.String(); !strings.Contains(l, "account degraded") || !strings.Contains(l, "reason=imap_unreachable") ||
		!(strings.Contains(l, "i/o timeout") || strings.Contains(l, "no answer within the time allowed")) {
		t.Errorf("the log does not report the upstream as unreachable for being too slow:\n%s", l)
	}
}

// The upstream closes the connection in the middle of a FETCH response:
// the client's session ends (relayd cannot make up the rest of a
// response), relayd logs the session's end and stays up, and the next
// login works and fetches the whole message.
func TestIMAPUpstreamClosesMidFetch(t *testing.T) {
	// Cut inside the message's literal.
	fp := &faultProxy{cutDown: []byte("Subject: whole\r\n")}
	var up *testkit.IMAPUpstream
	r := newTestRelay(t, relayOpts{upstream: func(idp *testkit.IdP) (string, []byte) {
		var err error
		if up, err = testkit.NewIMAPUpstream(idp, testkit.IMAPOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { up.Close() })
		up.AddUser(testMailbox)
		up.Deliver(testMailbox, []byte("Subject: whole\r\n\r\n"+strings.Repeat("line of the body\r\n", 1000)))
		return startFaultProxy(t, up.Addr, fp), nil
	}})
	fetch := func() ([]byte, error) {
		c := r.login()
		if _, err := c.Select("INBOX", nil).Wait(); err != nil {
			return nil, err
		}
		msgs, err := c.Fetch(imap.SeqSetNum(1), &imap.FetchOptions{BodySection: []*imap.FetchItemBodySection{{}}}).Collect()
		if err != nil {
			return nil, err
		}
		if len(msgs) != 1 {
			return nil, fmt.Errorf("%d messages", len(msgs))
		}
		return msgs[0].FindBodySection(&imap.FetchItemBodySection{}), nil
	}
	// The cut session in raw lines: go-imap's client races with itself on
	// a connection lost inside a literal.
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\nb SELECT INBOX\r\nc FETCH 1 BODY[]\r\n")
	rest, err := io.ReadAll(rw.br)
	if err != nil {
		t.Fatalf("reading the cut session: %v", err)
	}
	if bytes.Contains(rest, []byte("\r\nc OK")) || bytes.Count(rest, []byte("line of the body")) == 1000 {
		t.Fatalf("FETCH through an upstream that closed mid-response completed:\n%s", rest)
	}
	if !fp.cut.Load() {
		t.Fatal("the connection was never cut")
	}
	select {
	case <-r.ended:
	case <-time.After(10 * time.Second):
		t.Fatal("the cut session never ended")
	}
	body, err := fetch()
	if err != nil || !bytes.HasSuffix(body, []byte(strings.Repeat("line of the body\r\n", 1000))) {
		t.Errorf("FETCH on a new session = %d bytes, %v; want the whole message", len(body), err)
	}
}

// The upstream submission server closes the connection in the middle of
// DATA: the message is not lost and not sent twice — relayd defers it and
// delivers it whole on the next attempt.
func TestSMTPUpstreamClosesMidData(t *testing.T) {
	fp := &faultProxy{cutUp: []byte("cut here")}
	r := newSMTPRelay(t, smtpRelayOpts{via: func(upAddr string) string { return startFaultProxy(t, upAddr, fp) }})
	c := r.client()
	msg := []byte("Subject: cut\r\n\r\n" + strings.Repeat("before\r\n", 500) + "cut here\r\n" + strings.Repeat("after\r\n", 500))
	if err := r.send(c, smtpSender, []string{"x@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	got := r.waitMessages(1)
	if !fp.cut.Load() {
		t.Fatal("the connection was never cut")
	}
	if !bytes.HasSuffix(got[0].Data, msg) {
		t.Errorf("the upstream got %d bytes, not the whole message", len(got[0].Data))
	}
	if n := len(r.up.Messages()); n != 1 {
		t.Errorf("the upstream has %d messages, want 1", n)
	}
	if !strings.Contains(r.logs.String(), "delivery deferred") {
		t.Errorf("no deferral logged:\n%s", r.logs.String())
	}
}

// An upstream submission server answering one byte at a time (every 2 ms
// here): delivery goes on as long as each reply comes within the
// transport's per-command timeout (5 minutes, as Postfix's are per
// command: 1 byte a second passes too, slowly), and the message arrives
// once.
func TestSMTPUpstreamOneByteAtATime(t *testing.T) {
	fp := &faultProxy{trickle: 2 * time.Millisecond}
	r := newSMTPRelay(t, smtpRelayOpts{via: func(upAddr string) string { return startFaultProxy(t, upAddr, fp) }})
	c := r.client()
	msg := []byte("Subject: slow\r\n\r\nthrough a slow upstream\r\n")
	if err := r.send(c, smtpSender, []string{"x@example.net"}, msg); err != nil {
		t.Fatal(err)
	}
	got := r.waitMessages(1)
	if !bytes.HasSuffix(got[0].Data, msg) {
		t.Errorf("the upstream got %q", got[0].Data)
	}
	if n := len(r.up.Messages()); n != 1 {
		t.Errorf("the upstream has %d messages, want 1", n)
	}
}
