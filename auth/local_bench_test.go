package auth

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
)

// BenchmarkFirstLoginDuringFlood measures the first (uncached) login of one
// account while 200 wrong-password attempts for another arrive at once,
// all at bcrypt's default cost, beside the same login unloaded.
// go test -bench FirstLoginDuringFlood -run - ./auth
func BenchmarkFirstLoginDuringFlood(b *testing.B) {
	ha, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.DefaultCost)
	hb, _ := bcrypt.GenerateFromPassword([]byte("bob-pw"), bcrypt.DefaultCost)
	accts := []*config.Account{{Name: "a", LocalUser: "alice", LocalPasswordHash: string(ha)},
		{Name: "b", LocalUser: "bob", LocalPasswordHash: string(hb)}}
	var unloaded, loaded time.Duration
	for i := 0; i < b.N; i++ {
		u := NewUsers(accts)
		start := time.Now()
		u.Check("bob", "bob-pw")
		unloaded += time.Since(start)

		u = NewUsers(accts)
		var wg sync.WaitGroup
		for j := range 200 {
			wg.Add(1)
			go func() { defer wg.Done(); u.Check("alice", fmt.Sprintf("wrong-%d", j)) }()
		}
		time.Sleep(10 * time.Millisecond) // let the flood queue up first: this is the benchmark's scenario, not a sync point
		start = time.Now()
		if _, err := u.Check("bob", "bob-pw"); err != nil {
			b.Fatal(err)
		}
		loaded += time.Since(start)
		wg.Wait()
	}
	b.ReportMetric(float64(unloaded.Milliseconds())/float64(b.N), "ms/first-login-unloaded")
	b.ReportMetric(float64(loaded.Milliseconds())/float64(b.N), "ms/first-login-during-flood")
}
