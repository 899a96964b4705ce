package signin_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/signin"
)

// One device-code poll that gets no answer until the HTTP client's 30 s
// timeout is not the code's expiry: with 14 minutes left, polling goes on
// and the sign-in completes.
func TestDevicePollTimeoutIsNotExpiry(t *testing.T) {
	idp := newIdP(t)
	idp.SetDeviceTiming(1, 15*time.Minute)
	idp.StallDevicePolls(1)
	synctest.Test(t, func(t *testing.T) {
		var out testkit.SyncBuffer
		hc := idp.Client()
		hc.Timeout = 30 * time.Second // as SignIn's default client
		s := &signin.SignIn{Account: signInAccount(t, idp), Out: &out, HTTPClient: hc}
		start := time.Now()
		done := make(chan struct{})
		var g *auth.Grant
		var err error
		go func() { g, err = s.Device(context.Background()); close(done) }()
		synctest.Wait() // the code is shown; the first poll waits for its turn
		m := regexp.MustCompile(`enter the code\s+(\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no code shown:\n%s", out.String())
		}
		idp.ApproveDevice(m[1], "support@example.com")
		<-done
		if err != nil || g == nil {
			t.Fatalf("Device() = %+v, %v; want the grant after one poll timed out\n%s", g, err, out.String())
		}
		if took := time.Since(start); took < 30*time.Second || took > 2*time.Minute {
			t.Errorf("the grant came after %s; want just after the stalled poll's 30 s", took)
		}
		if !strings.Contains(out.String(), "still waiting with the same code") {
			t.Errorf("the timed-out poll was not told:\n%s", out.String())
		}
	})
}

// The code's real expiry still ends the wait, even while polls time out.
func TestDeviceExpiresWhilePollsTimeOut(t *testing.T) {
	idp := newIdP(t)
	idp.SetDeviceTiming(1, 2*time.Minute)
	idp.StallDevicePolls(1000)
	synctest.Test(t, func(t *testing.T) {
		var out testkit.SyncBuffer
		hc := idp.Client()
		hc.Timeout = 30 * time.Second
		s := &signin.SignIn{Account: signInAccount(t, idp), Out: &out, HTTPClient: hc}
		start := time.Now()
		_, err := s.Device(context.Background())
		if err == nil || !strings.Contains(err.Error(), "the code expired") {
			t.Fatalf("Device() = %v; want the code expired", err)
		}
		if took := time.Since(start); took < 2*time.Minute || took > 2*time.Minute+time.Second {
			t.Errorf("gave up after %s; want at the code's expiry, 2m", took)
		}
	})
	idp.StallDevicePolls(0)
}
