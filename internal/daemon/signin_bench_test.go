package daemon

import (
	"bufio"
	"context"
	"io"
	"regexp"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/queue"
	"github.com/relayd/relayd/signin"
)

var userCode = regexp.MustCompile(`enter the code\s+(\S+)`)

// BenchmarkDeviceApprovalToDelivery measures, for a mailbox whose grant was
// revoked and whose mail is held, the time from the person approving a
// device code at the IdP to the held message reaching the upstream: the
// device poll (the fake IdP asks for a 1 s interval), the daemon's check
// of the grant (one refresh and the ID token), and the drain.
// go test -bench DeviceApproval -run - ./internal/daemon
func BenchmarkDeviceApprovalToDelivery(b *testing.B) {
	td := startDaemon(b)
	var total time.Duration
	for i := 0; i < b.N; i++ {
		td.idp.Revoke(mailbox)
		if err := td.send("x@example.net", "held until the sign-in"); err != nil {
			b.Fatal(err)
		}
		td.waitEvent(queue.EventHeld)
		outR, outW := io.Pipe()
		s := &signin.SignIn{Account: td.d.config().Accounts[0], Out: outW}
		got := make(chan *auth.Grant, 1)
		go func() {
			g, err := s.Device(context.Background())
			outW.Close()
			if err != nil {
				b.Error(err)
			}
			got <- g
		}()
		sc := bufio.NewScanner(outR)
		code := ""
		for code == "" && sc.Scan() {
			if m := userCode.FindStringSubmatch(sc.Text()); m != nil {
				code = m[1]
			}
		}
		go io.Copy(io.Discard, outR)
		start := time.Now()
		td.idp.ApproveDevice(code, mailbox)
		g := <-got
		if err := td.d.InstallGrant("support", g); err != nil {
			b.Fatal(err)
		}
		td.waitEvent(queue.EventDelivered)
		total += time.Since(start)
	}
	b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms/approval-to-delivery")
}
