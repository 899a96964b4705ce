package status

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/testkit"
)

// serveTest serves the status API of b on a fresh socket with limits l and
// returns the socket's path.
func serveTest(t *testing.T, b Backend, l Limits, logs io.Writer) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "status.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	if logs == nil {
		logs = io.Discard
	}
	srv := NewServer(b, slog.New(slog.NewTextHandler(logs, nil)), nil)
	srv.SetLimits(l)
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return sock
}

// keepAlive is a raw keep-alive connection to the status socket.
type keepAlive struct {
	net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, sock string) *keepAlive {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{Conn: c, br: bufio.NewReader(c)}
}

// get sends GET path and returns the answer's status code, or the error.
func (k *keepAlive) get(path string) (int, error) {
	k.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(k, "GET "+path+" HTTP/1.1\r\nHost: relayd\r\n\r\n"); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(k.br, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, err
}

// closedByServer waits up to d for the server to close k, and reports
// whether it did (a read that ends in EOF or a reset, not a timeout).
func (k *keepAlive) closedByServer(d time.Duration) bool {
	k.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, k.br)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// A keep-alive connection left idle after a request is closed after
// IdleTimeout.
func TestStatusIdleConnectionClosed(t *testing.T) {
	b := &fakeBackend{st: &Status{Banner: "all 1 mailbox ok"}}
	sock := serveTest(t, b, Limits{IdleTimeout: 50 * time.Millisecond}, nil)
	k := dialKeepAlive(t, sock)
	if code, err := k.get("/v1/status"); err != nil || code != http.StatusOK {
		t.Fatalf("GET /v1/status = %d, %v", code, err)
	}
	if !k.closedByServer(30 * time.Second) {
		t.Fatal("an idle keep-alive connection was still open 30s after its answer (IdleTimeout 50ms)")
	}
}

// A request whose body never comes is given up after RequestTimeout: it
// does not hold its connection for ever.
func TestStatusStalledRequestClosed(t *testing.T) {
	b := &fakeBackend{st: &Status{}, granted: map[string]*auth.Grant{}}
	sock := serveTest(t, b, Limits{RequestTimeout: 50 * time.Millisecond}, nil)
	// The test runs as relayd's user, who may hand over a grant: the
	// handler waits for the body.
	k := dialKeepAlive(t, sock)
	io.WriteString(k, "POST /v1/accounts/support/grant HTTP/1.1\r\nHost: relayd\r\nContent-Length: 100\r\n\r\n{")
	if !k.closedByServer(30 * time.Second) {
		t.Fatal("a request whose body stalled still held its connection 30s later (RequestTimeout 50ms)")
	}
}

// slowBackend hands grants over slowly, as a token refresh can be.
type slowBackend struct {
	fakeBackend
	delay time.Duration
}

func (s *slowBackend) InstallGrant(name string, g *auth.Grant) error {
	time.Sleep(s.delay) // the fake refresh's duration, not synchronization
	return s.fakeBackend.InstallGrant(name, g)
}

// A grant hand-off that waits for a refresh longer than RequestTimeout
// still gets its answer: it has SlowRequestTimeout.
func TestStatusSlowGrantHandOffAnswered(t *testing.T) {
	b := &slowBackend{fakeBackend: fakeBackend{st: &Status{}, granted: map[string]*auth.Grant{}}, delay: 300 * time.Millisecond}
	sock := serveTest(t, b, Limits{RequestTimeout: 50 * time.Millisecond}, nil)
	ctx := context.Background()
	if err := NewClient(sock).InstallGrant(ctx, "support", &auth.Grant{RefreshToken: "rt", GrantedAt: time.Now()}); err != nil {
		t.Fatalf("InstallGrant() that takes 6 times RequestTimeout = %v, want nil", err)
	}
	// Other calls keep RequestTimeout: the status call works as usual.
	if _, err := NewClient(sock).Status(ctx); err != nil {
		t.Fatalf("Status() = %v", err)
	}
}

// Connections beyond MaxConnsPerUID are closed as soon as they are
// accepted, logged, and one closed makes room for another.
func TestStatusConnectionsPerUIDCapped(t *testing.T) {
	b := &fakeBackend{st: &Status{Banner: "all 1 mailbox ok"}}
	var logs testkit.SyncBuffer
	sock := serveTest(t, b, Limits{MaxConns: 8, MaxConnsPerUID: 2}, &logs)
	var held []*keepAlive
	for i := range 2 {
		k := dialKeepAlive(t, sock)
		if code, err := k.get("/v1/status"); err != nil || code != http.StatusOK {
			t.Fatalf("connection %d: GET /v1/status = %d, %v", i+1, code, err)
		}
		held = append(held, k)
	}
	extra := dialKeepAlive(t, sock)
	if code, err := extra.get("/v1/status"); err == nil {
		t.Fatalf("third connection of one uid: GET /v1/status = %d, want it closed", code)
	}
	if !strings.Contains(logs.String(), "status socket: closed new connections at once") || !strings.Contains(logs.String(), "max_per_uid=2") {
		t.Errorf("the refusal was not logged:\n%s", logs.String())
	}
	// The slot of a connection the client closes is freed when the server
	// sees the close, which takes a moment: try until then.
	held[0].Close()
	deadline := time.Now().Add(30 * time.Second)
	for {
		k := dialKeepAlive(t, sock)
		code, err := k.get("/v1/status")
		if err == nil && code == http.StatusOK {
			break
		}
		k.Close()
		if time.Now().After(deadline) {
			t.Fatalf("no connection accepted within 30s after one of two was closed: %d, %v", code, err)
		}
	}
}

// The caps in all and per uid are counted apart, and released.
func TestLimitListenerCounts(t *testing.T) {
	l := newLimitListener(nil, "status socket", 4, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	alice, bob, carol := &Peer{UID: 1001}, &Peer{UID: 1002}, &Peer{UID: 1003}
	for _, tc := range []struct {
		p    *Peer
		want bool
	}{{alice, true}, {alice, true}, {alice, false}, {bob, true}, {bob, true}, {carol, false}} {
		if got := l.take(tc.p); got != tc.want {
			t.Fatalf("take(uid %d) with %d open = %v, want %v", tc.p.UID, l.open, got, tc.want)
		}
	}
	l.release(alice)
	if !l.take(carol) {
		t.Fatal("take(carol) after a release = false")
	}
	if l.take(alice) {
		t.Fatal("take(alice) beyond the cap in all = true")
	}
}

// The defaults leave most descriptors to the mail listeners: the status
// socket and the metrics listener together take at most 1/8 of the
// open-file limit, and one uid a quarter of the socket's.
func TestDefaultLimitsFromOpenFileLimit(t *testing.T) {
	for _, tc := range []struct {
		nofile uint64
		want   int
	}{{1024, 64}, {64, 8}, {20000, 256}, {1 << 20, 256}} {
		if got := defaultMaxConns(tc.nofile); got != tc.want {
			t.Errorf("defaultMaxConns(%d) = %d, want %d", tc.nofile, got, tc.want)
		}
		if tc.nofile >= 1024 && 2*defaultMaxConns(tc.nofile) > int(tc.nofile/8) {
			t.Errorf("open-file limit %d: status and metrics may hold %d descriptors", tc.nofile, 2*defaultMaxConns(tc.nofile))
		}
	}
	l := Limits{}.withDefaults()
	if l.IdleTimeout <= 0 || l.ReadHeaderTimeout <= 0 || l.RequestTimeout <= 0 || l.SlowRequestTimeout <= l.RequestTimeout {
		t.Errorf("default timeouts = %+v", l)
	}
	if l.MaxConnsPerUID != l.MaxConns/4 || l.MaxConns != defaultMaxConns(openFileLimit()) {
		t.Errorf("default caps = %d, %d per uid", l.MaxConns, l.MaxConnsPerUID)
	}
}
