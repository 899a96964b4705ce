package main

import (
	"bufio"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
)

// An authorize whose identity provider cannot be reached says which
// endpoint of which host could not be reached and why, in words, and how
// to set an outbound proxy, instead of a Go dial error; nothing is stored.
func TestAuthorizeUnreachableTokenEndpoint(t *testing.T) {
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		t.Setenv(v, "") // the relayd started here connects directly
	}
	deadURL := "http://" + testkit.RefusingAddr(t) + "/token" // connection refused

	for _, tc := range []struct {
		name      string
		tokenURL  string
		deviceURL string
		args      []string
		want      []string
	}{
		{"unresolvable host, imported refresh token", "https://login.invalid/token", "", nil,
			[]string{`could not reach the token endpoint login.invalid: its name does not resolve`}},
		{"dead loopback port, imported refresh token", deadURL, "", nil,
			[]string{`could not reach the token endpoint 127.0.0.1: the connection was refused`}},
		{"unresolvable host, device flow", "https://login.invalid/token", "https://login.invalid/devicecode", []string{"--device"},
			[]string{`could not reach the device authorization endpoint login.invalid: its name does not resolve`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			a := &e.conf.Accounts[0]
			a.TokenURL, a.DeviceAuthURL = tc.tokenURL, tc.deviceURL
			e.writeConfig()
			args := tc.args
			if args == nil {
				args = []string{"--refresh-token-file", e.rtFile()}
			}
			out, code := e.run(append([]string{"authorize", "-c", e.cfg, "support"}, args...)...)
			if code != 1 {
				t.Errorf("relayd authorize exit = %d, want 1:\n%s", code, out)
			}
			for _, w := range append(tc.want, "HTTPS_PROXY", "relayd(8), EXAMPLES", "nothing was stored") {
				if !strings.Contains(out, w) {
					t.Errorf("relayd authorize does not say %q:\n%s", w, out)
				}
			}
			for _, raw := range []string{"dial tcp", "lookup login.invalid", "Post \""} {
				if strings.Contains(out, raw) {
					t.Errorf("relayd authorize prints the raw Go error (%q):\n%s", raw, out)
				}
			}
			if _, err := os.Stat(filepath.Join(e.dir, "state", "support.json")); err == nil {
				t.Error("a grant was stored")
			}
		})
	}
}

// relayd's token requests go through the proxy HTTPS_PROXY names (Go's
// http.ProxyFromEnvironment): the proxy is asked to CONNECT to the token
// endpoint's host, which this machine itself could not even resolve, and
// a proxy that refuses is named as the cause.
func TestAuthorizeHonoursHTTPSProxy(t *testing.T) {
	e := newEnv(t)
	e.conf.Accounts[0].TokenURL = "https://login.invalid/token"
	e.writeConfig()
	proxy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	asked := make(chan string, 1)
	go func() {
		c, err := proxy.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, err := http.ReadRequest(bufio.NewReader(c))
		if err != nil {
			asked <- "unreadable request: " + err.Error()
			return
		}
		asked <- req.Method + " " + req.Host
		c.Write([]byte("HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"))
	}()
	cmd := exec.Command(relaydBin, "authorize", "-c", e.cfg, "support", "--refresh-token-file", e.rtFile())
	cmd.Env = append(os.Environ(), "HTTPS_PROXY=http://"+proxy.Addr().String(), "NO_PROXY=", "no_proxy=", "https_proxy=")
	out, _ := cmd.CombinedOutput()
	e.record("relayd authorize through a proxy", out)
	select {
	case got := <-asked:
		if got != "CONNECT login.invalid:443" {
			t.Errorf("the proxy was asked %q, want CONNECT login.invalid:443", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("relayd authorize did not use HTTPS_PROXY:\n%s", out)
	}
	if !strings.Contains(string(out), "could not reach the token endpoint login.invalid through the proxy "+proxy.Addr().String()+" (HTTPS_PROXY): Bad Gateway") {
		t.Errorf("relayd authorize does not name the proxy as the cause:\n%s", out)
	}
}
