package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/localauth"
	"github.com/relayd/relayd/registry"
)

// fakeUpstream is an IMAP server reached over net.Pipe, so that it runs
// inside a synctest bubble on the fake clock: it greets, takes
// AUTHENTICATE PLAIN with password "pw", and closes a connection that has
// not logged in after preauth, as Exchange does after 60 s.
type fakeUpstream struct {
	preauth time.Duration

	mu       sync.Mutex
	fail     bool        // dials fail
	dialedAt []time.Time // every dial, failed or not
	open     map[net.Conn]bool
	timedOut int // connections the fake closed for want of a login
	logins   int
}

func newFakeUpstream(preauth time.Duration) *fakeUpstream {
	return &fakeUpstream{preauth: preauth, open: map[net.Conn]bool{}}
}

func (f *fakeUpstream) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.dialedAt = append(f.dialedAt, time.Now())
	if f.fail {
		return nil, errors.New("connection refused")
	}
	client, server := net.Pipe()
	f.open[server] = true
	go f.serve(server)
	return client, nil
}

func (f *fakeUpstream) serve(c net.Conn) {
	defer func() {
		f.mu.Lock()
		delete(f.open, c)
		f.mu.Unlock()
		c.Close()
	}()
	var mu sync.Mutex
	loggedIn := false
	t := time.AfterFunc(f.preauth, func() {
		mu.Lock()
		defer mu.Unlock()
		if !loggedIn {
			f.mu.Lock()
			f.timedOut++
			f.mu.Unlock()
			c.Close()
		}
	})
	defer t.Stop()
	fmt.Fprintf(c, "* OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN] fake ready\r\n")
	br := bufio.NewReader(c)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		tag, cmd := fields[0], strings.ToUpper(fields[1])
		switch {
		case cmd == "AUTHENTICATE" && len(fields) == 4 && fields[3] == "AGhlbHBkZXNrAHB3": // \0helpdesk\0pw
			mu.Lock()
			loggedIn = true
			mu.Unlock()
			fmt.Fprintf(c, "%s OK [CAPABILITY IMAP4rev1 IDLE] logged in\r\n", tag)
		case cmd == "AUTHENTICATE":
			fmt.Fprintf(c, "%s NO [AUTHENTICATIONFAILED] bad password\r\n", tag)
		case cmd == "LOGOUT":
			fmt.Fprintf(c, "* BYE\r\n%s OK bye\r\n", tag)
			return
		default:
			fmt.Fprintf(c, "%s OK done\r\n", tag)
		}
	}
}

func (f *fakeUpstream) dials() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.dialedAt)
}

func (f *fakeUpstream) openConns() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.open)
}

// closeIdle closes, from the server's side, every connection.
func (f *fakeUpstream) closeAll() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.open {
		c.Close()
	}
}

// poolAccount is a provider "password" account at the fake upstream with
// n warm connections.
func poolAccount(n, limit int) *registry.Account {
	cfg := &config.Account{Name: "support", Email: testMailbox, Login: testUser, Provider: "password",
		Direction: config.DirIncoming, IMAPServer: "imap.example.test:143", IMAPSecurity: config.SecurityNone,
		WarmConnections: n, IMAPConnections: limit, UpstreamPreauthTimeout: 60 * time.Second}
	return registry.Wrap(&auth.Account{Config: cfg, Password: "pw"})
}

// poolServer is an IMAP server (no listener) whose upstream is f.
func poolServer(t *testing.T, f *fakeUpstream, accts ...*registry.Account) (*IMAPServer, *registry.Registry) {
	m := map[string]*registry.Account{}
	for _, a := range accts {
		m[a.Config.Name] = a
	}
	reg := registry.New(m)
	s := NewIMAPServer(IMAPOptions{Users: localauth.NewUsers(nil), Accounts: reg, Dialer: f.dial,
		Logger: slog.New(slog.NewTextHandler(t.Output(), nil)), UpstreamTimeout: 10 * time.Second})
	return s, reg
}

func warmOf(t *testing.T, s *IMAPServer, name string) WarmStatus {
	t.Helper()
	st, _ := s.WarmStatus(name)
	return st
}

// login logs a in upstream as a session would.
func poolLogin(t *testing.T, s *IMAPServer, a *registry.Account) *upstreamConn {
	t.Helper()
	up, _, caps, err := s.loginUpstream(context.Background(), a)
	if err != nil {
		t.Fatalf("loginUpstream() = %v, want nil", err)
	}
	if strings.Join(caps, " ") != "IMAP4rev1 IDLE" {
		t.Errorf("post-login capabilities = %v", caps)
	}
	return up
}

func TestWarmFilledAtStartAndRefilledAfterUse(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeUpstream(time.Minute)
		a := poolAccount(2, 0)
		s, _ := poolServer(t, f, a)
		defer s.Close()
		s.SyncWarm()
		synctest.Wait()
		if st := warmOf(t, s, "support"); st.Ready != 2 || st.Target != 2 || f.dials() != 2 {
			t.Fatalf("after start: %+v, %d dials; want 2 ready of 2", st, f.dials())
		}
		up := poolLogin(t, s, a)
		defer up.Close()
		if st := warmOf(t, s, "support"); st.Served != 1 || st.Missed != 0 {
			t.Errorf("after a login: %+v, want it served warm", st)
		}
		synctest.Wait()
		if st := warmOf(t, s, "support"); st.Ready != 2 || st.Served != 1 || f.dials() != 3 {
			t.Errorf("after a login: %+v, %d dials; want 2 ready again, 1 served, 3 dials", st, f.dials())
		}
	})
}

func TestWarmRecycledBeforePreauthTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeUpstream(60 * time.Second) // as Exchange
		a := poolAccount(1, 0)
		s, _ := poolServer(t, f, a)
		defer s.Close()
		s.SyncWarm()
		for range 20 { // ten minutes, a login every 30 s
			time.Sleep(30 * time.Second)
			synctest.Wait()
			if st := warmOf(t, s, "support"); st.Ready != 1 {
				t.Fatalf("at %v: %+v, want one ready", time.Now(), st)
			}
			up := poolLogin(t, s, a)
			up.Close()
		}
		time.Sleep(10 * time.Minute) // and ten minutes without logins
		synctest.Wait()
		f.mu.Lock()
		timedOut := f.timedOut
		f.mu.Unlock()
		if timedOut != 0 {
			t.Errorf("the upstream timed out %d warm connections, want 0 (replaced before its 60 s)", timedOut)
		}
		if st := warmOf(t, s, "support"); st.Served != 20 || st.Ready != 1 || st.Discarded != 0 {
			t.Errorf("%+v, want 20 served, 1 ready, none discarded", st)
		}
		// 20 logins, plus one connection per 50 s of the idle ten minutes
		// (a replacement dialed 5 s ahead).
		if n := f.dials(); n < 20+10 || n > 20+15 {
			t.Errorf("%d dials, want about 32", n)
		}
		if n := f.openConns(); n != 1 {
			t.Errorf("%d connections open at the upstream, want 1 (the replaced ones closed)", n)
		}
	})
}

func TestWarmClosedConnectionNeverHandedOut(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeUpstream(time.Hour)
		a := poolAccount(1, 0)
		s, _ := poolServer(t, f, a)
		defer s.Close()
		s.SyncWarm()
		synctest.Wait()
		f.closeAll() // the upstream restarted, or timed the connection out early
		synctest.Wait()
		up := poolLogin(t, s, a)
		defer up.Close()
		synctest.Wait()
		if st := warmOf(t, s, "support"); st.Served != 0 || st.Discarded != 1 || st.Missed != 1 || st.Ready != 1 {
			t.Errorf("%+v, want the closed one discarded, the login dialed, one ready again", st)
		}
	})
}

// On a real socket the check peeks without blocking: a connection the
// server closed, or one holding bytes nobody asked for, is not alive.
func TestWarmAliveOnSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverSide := make(chan net.Conn, 3)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] hi\r\n"))
			serverSide <- c
		}
	}()
	a := poolAccount(1, 0).Account
	a.Config.IMAPServer = ln.Addr().String()
	var d net.Dialer
	dial := func() (*upstreamConn, net.Conn) {
		u, err := dialIMAP(context.Background(), a, d.DialContext, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		u.clearDeadline()
		return u, <-serverSide
	}
	// readable waits until the kernel has something for u to read.
	readable := func(u *upstreamConn) {
		rc, _ := u.raw.(*net.TCPConn).SyscallConn()
		rc.Control(func(fd uintptr) {
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, 5000)
		})
	}
	quiet, sq := dial()
	defer sq.Close()
	if !quiet.alive() {
		t.Error("a quiet open connection is not alive")
	}
	closed, sc := dial()
	sc.Close()
	readable(closed)
	if closed.alive() {
		t.Error("a connection the server closed is alive")
	}
	bye, sb := dial()
	defer sb.Close()
	sb.Write([]byte("* BYE Autologout; idle for too long\r\n"))
	readable(bye)
	if bye.alive() {
		t.Error("a connection with an unread BYE is alive")
	}
	if !quiet.alive() {
		t.Error("checking changed the quiet connection")
	}
}

func TestWarmNotDialedForHeldAccounts(t *testing.T) {
	for _, st := range []health.State{health.StateNeedsReauth, health.StateNeedsAdmin, health.StateDisconnected} {
		t.Run(string(st), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeUpstream(time.Hour)
				a := poolAccount(1, 0)
				s, _ := poolServer(t, f, a)
				defer s.Close()
				a.Health.Fail(health.SourceIMAP, &health.Error{State: st, Reason: health.ReasonUpstreamRejectedToken, Advice: "test"})
				s.SyncWarm()
				time.Sleep(time.Hour)
				synctest.Wait()
				if n := f.dials(); n != 0 {
					t.Errorf("%d dials for a %s account, want 0", n, st)
				}
				if w := warmOf(t, s, "support"); w.Target != 0 {
					t.Errorf("status %+v, want target 0 while held", w)
				}
				a.Health.Succeed(health.SourceIMAP) // reauthorized
				synctest.Wait()
				if w := warmOf(t, s, "support"); w.Ready != 1 || w.Target != 1 {
					t.Errorf("after the condition cleared: %+v, want 1 ready of 1", w)
				}
				a.Health.Fail(health.SourceIMAP, &health.Error{State: st, Reason: health.ReasonUpstreamRejectedToken, Advice: "test"})
				synctest.Wait()
				if w := warmOf(t, s, "support"); w.Ready != 0 || f.openConns() != 0 {
					t.Errorf("held again: %+v, %d open upstream; want the pool drained", w, f.openConns())
				}
			})
		})
	}
}

func TestWarmWithinConnectionLimit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeUpstream(time.Hour)
		a := poolAccount(3, 2) // 3 wanted, the provider takes 2
		s, _ := poolServer(t, f, a)
		defer s.Close()
		s.SyncWarm()
		synctest.Wait()
		if w := warmOf(t, s, "support"); w.Ready != 2 || f.openConns() != 2 {
			t.Fatalf("%+v, %d open; want 2 ready (imap_connections = 2)", w, f.openConns())
		}
		// Two sessions take both; nothing is dialed while they are open.
		var ups []*upstreamConn
		for range 2 {
			if !a.ReserveIMAP() {
				t.Fatal("ReserveIMAP() = false")
			}
			ups = append(ups, poolLogin(t, s, a))
		}
		time.Sleep(time.Hour)
		synctest.Wait()
		if w := warmOf(t, s, "support"); w.Ready != 0 || f.openConns() != 2 || f.dials() != 2 {
			t.Errorf("with 2 sessions open: %+v, %d open, %d dials; want none warm", w, f.openConns(), f.dials())
		}
		// One ends: the pool may fill one place again at its next wake.
		ups[0].Close()
		a.ReleaseIMAP()
		s.warm.accts["support"].poke()
		synctest.Wait()
		if w := warmOf(t, s, "support"); w.Ready != 1 || f.openConns() != 2 {
			t.Errorf("with 1 session open: %+v, %d open; want 1 warm", w, f.openConns())
		}
		ups[1].Close()
	})
}

func TestWarmBacksOffWhenDialsFail(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeUpstream(time.Hour)
		f.fail = true
		a := poolAccount(1, 0)
		s, _ := poolServer(t, f, a)
		defer s.Close()
		start := time.Now()
		s.SyncWarm()
		time.Sleep(10 * time.Minute)
		synctest.Wait()
		f.mu.Lock()
		var gaps []time.Duration
		for i, at := range f.dialedAt {
			if i > 0 {
				gaps = append(gaps, at.Sub(f.dialedAt[i-1]))
			}
		}
		first := f.dialedAt[0].Sub(start)
		f.fail = false
		f.mu.Unlock()
		want := []time.Duration{1, 2, 4, 8, 16, 32, 64, 128, 256}
		if first != 0 || len(gaps) < len(want) {
			t.Fatalf("first dial after %v, gaps %v; want at once, then doubling", first, gaps)
		}
		for i, w := range want {
			if gaps[i] != w*time.Second {
				t.Errorf("gap %d = %v, want %v", i, gaps[i], w*time.Second)
			}
		}
		if a.Health.State() != health.StateOK {
			t.Errorf("account state = %s: the pool's dials are not the account's condition", a.Health.State())
		}
		time.Sleep(5 * time.Minute) // at most BackoffMax
		synctest.Wait()
		if w := warmOf(t, s, "support"); w.Ready != 1 {
			t.Errorf("after the upstream came back: %+v, want 1 ready", w)
		}
	})
}

func TestWarmDrainedOnReloadAndShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeUpstream(time.Hour)
		a, b := poolAccount(1, 0), poolAccount(1, 0)
		b.Config.Name = "sales"
		kept := poolAccount(1, 0)
		kept.Config.Name = "kept"
		s, reg := poolServer(t, f, a, b, kept)
		s.SyncWarm()
		synctest.Wait()
		if n := f.openConns(); n != 3 {
			t.Fatalf("%d open, want 3", n)
		}
		keptConn := s.warm.accts["kept"].ready[0].c
		// A reload edits support (a new running account), removes sales
		// and keeps kept as it is.
		edited := poolAccount(2, 0)
		reg.Swap(map[string]*registry.Account{"support": edited, "kept": kept})
		s.SyncWarm()
		synctest.Wait()
		if _, ok := s.WarmStatus("sales"); ok {
			t.Error("the removed account still has a pool")
		}
		if w := warmOf(t, s, "support"); w.Ready != 2 {
			t.Errorf("edited account: %+v, want its new 2 ready", w)
		}
		if n := f.openConns(); n != 3 {
			t.Errorf("%d open at the upstream, want 3 (the old ones closed)", n)
		}
		if s.warm.accts["kept"].ready[0].c != keptConn {
			t.Error("an unchanged account's warm connection was replaced")
		}
		if up, _, _, err := s.loginUpstream(context.Background(), a); err != nil {
			t.Errorf("login of the replaced account: %v", err) // dials cold
		} else {
			up.Close()
		}
		if err := s.Shutdown(context.Background()); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if n := f.openConns(); n != 0 {
			t.Errorf("%d open at the upstream after shutdown, want 0", n)
		}
		s.SyncWarm() // too late: nothing starts
		synctest.Wait()
		if n := f.openConns(); n != 0 {
			t.Errorf("%d open after a sync past shutdown", n)
		}
	})
}
