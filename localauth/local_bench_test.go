package localauth

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/relayd/relayd/config"
)

// BenchmarkFirstLoginDuringFlood measures the first (uncached) login of one
// account while 200 wrong-password attempts for another arrive at once,
// all at bcrypt's default cost, beside the same login unloaded; and the
// median of 20 warm (cached) logins of a third account, unloaded and
// during the flood.
// go test -bench FirstLoginDuringFlood -run - ./localauth
func BenchmarkFirstLoginDuringFlood(b *testing.B) {
	ha, _ := bcrypt.GenerateFromPassword([]byte("alice-pw"), bcrypt.DefaultCost)
	hb, _ := bcrypt.GenerateFromPassword([]byte("bob-pw"), bcrypt.DefaultCost)
	hc, _ := bcrypt.GenerateFromPassword([]byte("carol-pw"), bcrypt.DefaultCost)
	accts := []*config.Account{{Name: "a", LocalUser: "alice", LocalPasswordHash: string(ha)},
		{Name: "b", LocalUser: "bob", LocalPasswordHash: string(hb)},
		{Name: "c", LocalUser: "carol", LocalPasswordHash: string(hc)}}
	warm := func(u *Users) time.Duration {
		var l []time.Duration
		for range 20 {
			start := time.Now()
			if _, err := u.Check("carol", "carol-pw"); err != nil {
				b.Fatal(err)
			}
			l = append(l, time.Since(start))
		}
		slices.Sort(l)
		return l[len(l)/2]
	}
	var unloaded, loaded, warmUnloaded, warmLoaded time.Duration
	for i := 0; i < b.N; i++ {
		u := NewUsers(accts)
		start := time.Now()
		u.Check("bob", "bob-pw")
		unloaded += time.Since(start)
		u.Check("carol", "carol-pw")
		warmUnloaded += warm(u)

		u = NewUsers(accts)
		u.Check("carol", "carol-pw")
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
		warmLoaded += warm(u)
		wg.Wait()
	}
	b.ReportMetric(float64(unloaded.Milliseconds())/float64(b.N), "ms/first-login-unloaded")
	b.ReportMetric(float64(loaded.Milliseconds())/float64(b.N), "ms/first-login-during-flood")
	b.ReportMetric(float64(warmUnloaded.Nanoseconds())/float64(b.N), "ns/warm-login-p50-unloaded")
	b.ReportMetric(float64(warmLoaded.Nanoseconds())/float64(b.N), "ns/warm-login-p50-during-flood")
}
