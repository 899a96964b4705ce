package registry

import (
	"sync"
	"testing"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
)

func account(name string, imapConns int) *Account {
	return Wrap(&auth.Account{Config: &config.Account{Name: name, IMAPConnections: imapConns}})
}

// A reload swaps the whole set at once; lookups see one set or the other.
func TestSwap(t *testing.T) {
	a, b := account("a", 0), account("b", 0)
	r := New(map[string]*Account{"a": a})
	if r.Get("a") != a || r.Get("b") != nil || r.Auth("a") != a.Account || r.Health("a") != a.Health {
		t.Fatal("lookups before the swap")
	}
	old := r.Swap(map[string]*Account{"b": b})
	if old["a"] != a || r.Get("a") != nil || r.Get("b") != b || r.Auth("a") != nil || r.Health("a") != nil {
		t.Fatal("lookups after the swap")
	}
	if m := r.Map(); len(m) != 1 || m["b"] != b {
		t.Errorf("Map() = %v", m)
	}
}

// imap_connections caps an account's sessions, counted from any goroutine.
func TestReserveIMAP(t *testing.T) {
	a := account("a", 3)
	var wg sync.WaitGroup
	var mu sync.Mutex
	got := 0
	for range 10 {
		wg.Go(func() {
			if a.ReserveIMAP() {
				mu.Lock()
				got++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if got != 3 || a.IMAPSessions() != 3 {
		t.Errorf("reserved %d, sessions %d; want 3", got, a.IMAPSessions())
	}
	a.ReleaseIMAP()
	if !a.ReserveIMAP() {
		t.Error("a released place was not given again")
	}
}

// An account a reload edited counts the sessions opened before the reload:
// imap_connections holds across it.
func TestKeepSessions(t *testing.T) {
	prev := account("a", 2)
	if !prev.ReserveIMAP() || !prev.ReserveIMAP() {
		t.Fatal("two sessions before the reload")
	}
	next := account("a", 2)
	next.KeepSessions(prev)
	if next.ReserveIMAP() {
		t.Error("a third session after the reload was admitted; imap_connections is 2")
	}
	prev.ReleaseIMAP() // a session opened before the reload ends
	if !next.ReserveIMAP() || next.IMAPSessions() != 2 {
		t.Errorf("after one old session ended: sessions %d, want a place and 2 open", next.IMAPSessions())
	}
}
