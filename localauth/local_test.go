package localauth

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
)

func TestUsersCheckAndCache(t *testing.T) {
	h, err := HashPassword("pw1")
	if err != nil {
		t.Fatal(err)
	}
	a := &config.Account{Name: "a", LocalUser: "Alice@Example.com", LocalPasswordHash: h}
	now := time.Now()
	u := NewUsers([]*config.Account{a})
	u.Now = func() time.Time { return now }
	if got, err := u.Check("alice@example.com", "pw1"); err != nil || got != a {
		t.Fatalf("Check(good) = %v, %v", got, err)
	}
	if _, err := u.Check("alice@example.com", "pw2"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("Check(wrong password) = %v", err)
	}
	if _, err := u.Check("bob", "pw1"); !errors.Is(err, ErrBadCredentials) {
		t.Errorf("Check(unknown user) = %v", err)
	}
	// A cached login is answered without bcrypt: swap the hash to prove it.
	a.LocalPasswordHash = "$2a$10$invalidinvalidinvalidinvalidinvalidinvalidinvalidinva"
	if _, err := u.Check("alice@example.com", "pw1"); err != nil {
		t.Errorf("cached Check() = %v", err)
	}
	now = now.Add(6 * time.Minute)
	if _, err := u.Check("alice@example.com", "pw1"); err == nil {
		t.Error("Check() after the cache TTL used the stale entry")
	}
}

// A flood of attempts for one user runs one bcrypt check at a time for it
// (identical attempts share one), and an unknown user is checked against a
// hash of the accounts' cost.
func TestPasswordChecksBounded(t *testing.T) {
	h6, _ := bcrypt.GenerateFromPassword([]byte("right"), 6)
	h4, _ := bcrypt.GenerateFromPassword([]byte("other"), bcrypt.MinCost)
	u := NewUsers([]*config.Account{
		{Name: "a", LocalUser: "alice", LocalPasswordHash: string(h6)},
		{Name: "b", LocalUser: "bob", LocalPasswordHash: string(h4)},
	})
	if c, _ := bcrypt.Cost(u.dummy); c != 6 {
		t.Errorf("dummy hash cost %d, want the accounts' 6", c)
	}
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			u.Check("alice", fmt.Sprintf("wrong-%d", i%3)) // three distinct passwords
		}()
	}
	wg.Wait()
	u.mu.Lock()
	maxRunning, checks := u.maxRunning, u.checks
	u.mu.Unlock()
	if maxRunning != 1 {
		t.Errorf("%d checks for one user ran at once, want 1", maxRunning)
	}
	if checks >= 12 {
		t.Errorf("%d bcrypt checks for 12 attempts with 3 passwords: identical attempts were not shared", checks)
	}
	if a, err := u.Check("bob", "other"); err != nil || a.Name != "b" {
		t.Errorf("Check(bob) = %v, %v", a, err)
	}
	if _, err := u.Check("nobody", "x"); err != ErrBadCredentials {
		t.Errorf("Check(unknown) = %v", err)
	}
}
