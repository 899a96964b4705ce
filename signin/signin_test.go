package signin_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/signin"
)

func newIdP(t *testing.T) *testkit.IdP {
	t.Helper()
	return testkit.StartIdP(t)
}

// signInAccount is an account of the fake IdP that can sign in both ways.
func signInAccount(t testing.TB, idp *testkit.IdP) *config.Account {
	return testkit.Account{Name: "support", Provider: "custom", Email: "support@example.com", ClientID: "client",
		TokenURL: idp.TokenURL(), AuthURL: idp.AuthURL(), DeviceAuthURL: idp.DeviceAuthURL(), Issuer: idp.IssuerURL(),
		Direction: "outgoing", SMTPServer: "127.0.0.1:587", LocalPasswordHash: testkit.UnusedHash}.Parsed(t)
}

// waitOutput waits until out holds want or done is closed.
func waitOutput(t *testing.T, out *testkit.SyncBuffer, want string, done <-chan struct{}) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for !strings.Contains(out.String(), want) {
		select {
		case <-done:
			t.Fatalf("sign-in ended before %q:\n%s", want, out.String())
		case <-deadline:
			t.Fatalf("no %q:\n%s", want, out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestDevicePollsThroughDroppedConnection(t *testing.T) {
	idp := newIdP(t)
	idp.DropDevicePolls(1)
	var out testkit.SyncBuffer
	s := &signin.SignIn{Account: signInAccount(t, idp), Out: &out}
	done := make(chan struct{})
	var g *auth.Grant
	var err error
	go func() { g, err = s.Device(context.Background()); close(done) }()
	waitOutput(t, &out, "still waiting with the same code", done)
	code := regexp.MustCompile(`enter the code\s+(\S+)`).FindStringSubmatch(out.String())[1]
	idp.ApproveDevice(code, "support@example.com")
	<-done
	if err != nil || g == nil || g.Subject != "support@example.com" {
		t.Fatalf("Device() = %+v, %v", g, err)
	}
}

// On a terminal the device flow shows a QR code of the URL and counts the
// code's time down in place.
func TestDeviceTerminalOutput(t *testing.T) {
	idp := newIdP(t)
	var out testkit.SyncBuffer
	s := &signin.SignIn{Account: signInAccount(t, idp), Out: &out, Terminal: true}
	done := make(chan struct{})
	go func() { s.Device(context.Background()); close(done) }()
	waitOutput(t, &out, "\rwaiting for the sign-in; the code expires in ", done)
	code := regexp.MustCompile(`enter the code\s+(\S+)`).FindStringSubmatch(out.String())[1]
	idp.DeclineDevice(code)
	<-done
	if !strings.Contains(out.String(), "█") && !strings.Contains(out.String(), "▀") {
		t.Errorf("no QR code on a terminal:\n%s", out.String())
	}
}

// Bad answers from the IdP get a clear error and no grant.
func TestBrowserBadAnswers(t *testing.T) {
	for _, tc := range []struct{ how, want string }{
		{"no-refresh-token", "sent no refresh token"},
		{"no-id-token", "sent no ID token, so relayd cannot check who signed in"},
		{"malformed", "refused the code"},
	} {
		t.Run(tc.how, func(t *testing.T) {
			idp := newIdP(t)
			idp.SpoilNextGrant(tc.how)
			g, err := pastedSignIn(t, idp, func(loc string) string { return loc })
			if g != nil || err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "nothing was stored") {
				t.Errorf("Browser() = %v, %v; want %q", g, err, tc.want)
			}
		})
	}
	idp := newIdP(t)
	for _, tc := range []struct {
		name string
		edit func(string) string
		want string
	}{
		{"no query", func(loc string) string { return strings.SplitN(loc, "?", 2)[0] }, "is not the address the browser was sent to"},
		{"no code", func(loc string) string { return regexp.MustCompile(`code=[^&]+&?`).ReplaceAllString(loc, "") }, "carries no code"},
		{"no state", func(loc string) string { return regexp.MustCompile(`state=[^&]+&?`).ReplaceAllString(loc, "") }, "its state differs"},
		{"extra parameters", func(loc string) string { return loc + "&session_state=x&iss=evil" }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := pastedSignIn(t, idp, tc.edit)
			if tc.want == "" {
				if err != nil || g == nil {
					t.Errorf("Browser() = %v, %v; extra parameters are ignored", g, err)
				}
				return
			}
			if g != nil || err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Browser() = %v, %v; want %q", g, err, tc.want)
			}
		})
	}
}

// pastedSignIn runs a browser sign-in and pastes the redirect, edited.
func pastedSignIn(t *testing.T, idp *testkit.IdP, edit func(string) string) (*auth.Grant, error) {
	t.Helper()
	var out testkit.SyncBuffer
	inR, inW := io.Pipe()
	defer inW.Close()
	s := &signin.SignIn{Account: signInAccount(t, idp), Out: &out, In: inR}
	done := make(chan struct{})
	var g *auth.Grant
	var err error
	go func() { g, err = s.Browser(context.Background()); close(done) }()
	waitOutput(t, &out, "paste it here", done)
	authURL := regexp.MustCompile(`(?m)^\s+(http://\S+/authorize\?\S+)`).FindStringSubmatch(out.String())[1]
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, herr := c.Get(authURL)
	if herr != nil {
		t.Fatal(herr)
	}
	resp.Body.Close()
	fmt.Fprintln(inW, edit(resp.Header.Get("Location")))
	<-done
	return g, err
}

// slow_down (RFC 8628 §3.5) adds 5 seconds to the polling interval each
// time: with an interval of 1 s and two slow_downs the grant cannot come
// before 1 + 6 + 11 = 18 s, although the person approved at once.
func TestDeviceSlowDown(t *testing.T) {
	idp := newIdP(t)
	idp.SetDeviceTiming(1, 15*time.Minute)
	idp.SlowDownDevicePolls(2)
	synctest.Test(t, func(t *testing.T) {
		var out testkit.SyncBuffer
		s := &signin.SignIn{Account: signInAccount(t, idp), Out: &out, HTTPClient: idp.Client()}
		start := time.Now()
		done := make(chan struct{})
		var g *auth.Grant
		var err error
		go func() { g, err = s.Device(context.Background()); close(done) }()
		synctest.Wait() // the code is shown and the first poll waits
		m := regexp.MustCompile(`enter the code\s+(\S+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no code shown:\n%s", out.String())
		}
		idp.ApproveDevice(m[1], "support@example.com")
		<-done
		if err != nil || g == nil {
			t.Fatalf("Device() = %+v, %v", g, err)
		}
		if took := time.Since(start); took < 18*time.Second {
			t.Errorf("the grant came after %s: slow_down did not lengthen the interval", took)
		}
	})
}
