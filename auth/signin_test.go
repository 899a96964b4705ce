package auth

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

func TestDevicePollsThroughDroppedConnection(t *testing.T) {
	idp := newIdP(t)
	idp.DropDevicePolls(2) // x/oauth2 tries a second client authentication style after a first failure
	a := testkit.Account{Name: "support", Provider: "custom", Email: "support@example.com", ClientID: "client",
		TokenURL: idp.TokenURL(), DeviceAuthURL: idp.DeviceAuthURL(), Issuer: idp.IssuerURL(),
		Direction: "outgoing", SMTPServer: "127.0.0.1:587", LocalPasswordHash: testkit.UnusedHash}.Parsed(t)
	var out testkit.SyncBuffer
	s := &SignIn{Account: a, Out: &out}
	done := make(chan struct{})
	var g *Grant
	var err error
	go func() { g, err = s.Device(context.Background()); close(done) }()
	deadline := time.After(8 * time.Second)
	for !strings.Contains(out.String(), "still waiting with the same code") {
		select {
		case <-deadline:
			t.Fatalf("no message:\n%q", out.String())
		case <-done:
			t.Fatalf("Device() = %v, %v\n%s", g, err, out.String())
		case <-time.After(10 * time.Millisecond):
		}
	}
	_ = bytes.MinRead
}
