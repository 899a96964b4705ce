package status

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/queue"
)

func TestBannerAndState(t *testing.T) {
	ok := Account{Name: "sales", Snapshot: health.Snapshot{State: health.StateOK}}
	reauth := Account{Name: "support", Snapshot: health.Snapshot{State: health.StateNeedsReauth, Advice: "run 'relayd authorize support'"}}
	admin := Account{Name: "scanner", Snapshot: health.Snapshot{State: health.StateNeedsAdmin, Advice: "enable SMTP AUTH"}}
	degraded := Account{Name: "billing", Snapshot: health.Snapshot{State: health.StateDegraded}}
	fresh := Account{Name: "billing", Snapshot: health.Snapshot{State: health.StateNeedsReauth, Reason: health.ReasonNoGrant}}
	for _, tc := range []struct {
		accts []Account
		want  string
	}{
		{[]Account{ok}, "all 1 mailbox ok"},
		{[]Account{ok, reauth, ok}, "1 of 3 mailboxes needs reauthorization: support"},
		{[]Account{reauth, admin, degraded}, "1 of 3 mailboxes needs reauthorization: support; 1 of 3 mailboxes needs an administrator: scanner; 1 of 3 degraded (retrying): billing"},
		{[]Account{ok, fresh, reauth}, "1 of 3 mailboxes not authorized yet: billing; 1 of 3 mailboxes needs reauthorization: support"},
		{[]Account{fresh}, "1 of 1 mailbox not authorized yet: billing"},
	} {
		if got := MakeBanner(tc.accts); got != tc.want {
			t.Errorf("MakeBanner = %q, want %q", got, tc.want)
		}
	}
	if !admin.NeedsAttention() || !reauth.NeedsAttention() {
		t.Error("needs_admin and needs_reauth need attention")
	}
	if degraded.NeedsAttention() {
		t.Error("degraded needs no admin")
	}
}

type fakeBackend struct {
	st      *Status
	granted map[string]*auth.Grant
	q       *queue.Queue
}

func (f *fakeBackend) Status() *Status     { return f.st }
func (f *fakeBackend) Queue() *queue.Queue { return f.q }
func (f *fakeBackend) Reload() error       { return nil }
func (f *fakeBackend) InstallGrant(name string, g *auth.Grant) error {
	if name != "support" {
		return ErrUnknownAccount
	}
	f.granted[name] = g
	return nil
}

// The client and the server agree: status, grant hand-over, queue calls,
// and the errors for an unknown account and for no daemon.
func TestClientServer(t *testing.T) {
	env := relaytest.New(t)
	dir := env.Dir
	q := env.OpenQueue(relaytest.Registry(), queue.Options{})
	b := &fakeBackend{st: &Status{Version: "test", Banner: "all 1 mailbox ok", Accounts: []Account{{Name: "support"}}},
		granted: map[string]*auth.Grant{}, q: q}
	sock := filepath.Join(dir, "status.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	if _, err := Listen(sock); err == nil || !strings.Contains(err.Error(), "is relayd already running?") {
		t.Errorf("second Listen = %v", err)
	}

	c := NewClient(sock)
	ctx := context.Background()
	st, err := c.Status(ctx)
	if err != nil || st.Banner != "all 1 mailbox ok" || st.Accounts[0].Name != "support" {
		t.Fatalf("Status() = %+v, %v", st, err)
	}
	g := &auth.Grant{RefreshToken: "rt", GrantedAt: time.Now()}
	if err := c.InstallGrant(ctx, "support", g); err != nil || b.granted["support"].RefreshToken != "rt" {
		t.Errorf("InstallGrant() = %v", err)
	}
	if err := c.InstallGrant(ctx, "nobody", g); !errors.Is(err, ErrUnknownAccount) {
		t.Errorf("InstallGrant(unknown) = %v", err)
	}
	var out bytes.Buffer
	if err := c.QueueListTo(ctx, &out, "text"); err != nil || !strings.Contains(out.String(), "Mail queue is empty") {
		t.Errorf("QueueListTo = %q, %v", out.String(), err)
	}
	if err := c.QueueDelete(ctx, "no-such-id"); err == nil || !strings.Contains(err.Error(), "no such message") {
		t.Errorf("QueueDelete(unknown) = %v", err)
	}
	if _, err := NewClient(filepath.Join(dir, "none.sock")).Status(ctx); !errors.Is(err, ErrNotRunning) {
		t.Errorf("Status() without a daemon = %v, want ErrNotRunning", err)
	}
}

func TestRender(t *testing.T) {
	now := time.Now()
	st := &Status{Banner: "1 of 1 mailbox needs reauthorization: support", Accounts: []Account{{
		Name: "support", Email: "support@example.com", Provider: "office365", Direction: "both",
		Snapshot: health.Snapshot{State: health.StateNeedsReauth, Advice: "the grant was rejected; run 'relayd authorize support'",
			LastError: "token endpoint said invalid_grant", LastErrorAt: now.Add(-3 * time.Minute), HeldSince: now.Add(-time.Hour)},
		Token: Token{TokenStatus: auth.TokenStatus{AccessTokenExpiry: now.Add(52 * time.Minute)}},
		Queue: &queue.AccountStats{Queued: 2, Held: 5, Hold: &queue.Hold{State: health.StateNeedsReauth, Since: now.Add(-time.Hour)}},
	}}}
	var b bytes.Buffer
	Render(&b, st, now)
	for _, want := range []string{"1 of 1 mailbox needs reauthorization: support", "needs_reauth", "in 52m",
		"what to do: the grant was rejected; run 'relayd authorize support'", "last error: token endpoint said invalid_grant (3m ago)",
		"outgoing mail held since 1h00m ago"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("Render lacks %q:\n%s", want, b.String())
		}
	}
}

type panickyBackend struct {
	fakeBackend
	panics bool
}

func (p *panickyBackend) Status() *Status {
	if p.panics {
		p.panics = false
		panic("injected fault in a status handler")
	}
	return p.fakeBackend.Status()
}

// A handler that panics answers 500 with a generic text and is logged;
// the socket keeps serving.
func TestStatusHandlerPanicRecovered(t *testing.T) {
	dir := t.TempDir()
	b := &panickyBackend{fakeBackend: fakeBackend{st: &Status{Banner: "all 1 mailbox ok"}}, panics: true}
	sock := filepath.Join(dir, "status.sock")
	ln, err := Listen(sock)
	if err != nil {
		t.Fatal(err)
	}
	var logs testkit.SyncBuffer
	srv := NewServer(b, slog.New(slog.NewTextHandler(&logs, nil)), nil)
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())
	c := NewClient(sock)
	if _, err := c.Status(context.Background()); err == nil || !strings.Contains(err.Error(), "internal error") {
		t.Errorf("Status() during a panic = %v, want the internal error", err)
	}
	if st, err := c.Status(context.Background()); err != nil || st.Banner != "all 1 mailbox ok" {
		t.Errorf("Status() after a panic = %+v, %v", st, err)
	}
	if !strings.Contains(logs.String(), "internal error recovered") || !strings.Contains(logs.String(), "goroutine") {
		t.Errorf("the panic was not logged with its stack:\n%s", logs.String())
	}
}

// A never-authorized account (no_grant) reads "not authorized yet", and
// its advice, which is also its last error, is said once.
func TestRenderNotAuthorized(t *testing.T) {
	advice := "not authorized yet: run 'relayd authorize billing' to sign in"
	a := Account{Name: "billing", Email: "billing@example.com", Snapshot: health.Snapshot{State: health.StateNeedsReauth,
		Reason: health.ReasonNoGrant, Advice: advice, LastError: advice, LastErrorAt: time.Now()}}
	st := &Status{Accounts: []Account{a}}
	st.Banner = MakeBanner(st.Accounts)
	var b strings.Builder
	Render(&b, st, time.Now())
	out := b.String()
	if !strings.Contains(out, "1 of 1 mailbox not authorized yet: billing") || !strings.Contains(out, "billing: not authorized yet (needs_reauth, no_grant)") ||
		strings.Count(out, "relayd authorize billing") != 1 || strings.Contains(out, "last error") || strings.Contains(out, "reauthorization") {
		t.Errorf("Render() =\n%s", out)
	}
}
