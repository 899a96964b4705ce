package auth

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/testkit"
)

// A refresh that gets no answer (no DNS, a dead port) is the token
// endpoint's outage in words, naming the host and HTTPS_PROXY, never a Go
// dial error; errors the endpoint answered are not taken for one.
func TestUnreachableTokenEndpoint(t *testing.T) {
	for _, v := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"} {
		t.Setenv(v, "")
	}
	dead := "http://" + testkit.RefusingAddr(t) + "/token"
	for _, tc := range []struct{ url, host, why string }{
		{"https://login.invalid/token", "login.invalid", "its name does not resolve"},
		{dead, "127.0.0.1", "the connection was refused"},
	} {
		a := &config.Account{Name: "support", TokenURL: tc.url, ClientID: "c"}
		_, err := ImportRefreshToken(context.Background(), a, &http.Client{}, "rt")
		if err == nil {
			t.Fatalf("ImportRefreshToken(%s) = nil", tc.url)
		}
		var ue *UnreachableError
		if !errors.As(err, &ue) || ue.Endpoint != "token endpoint" || ue.Host != tc.host || !strings.HasPrefix(ue.Why, tc.why) {
			t.Errorf("ImportRefreshToken(%s) = %v, want the token endpoint %s unreachable: %s", tc.url, err, tc.host, tc.why)
		}

		// The daemon's refresh: degraded, with the words in status.
		req, _ := http.NewRequest("POST", tc.url, nil)
		_, rerr := http.DefaultClient.Do(req)
		he := Classify(a, rerr)
		if he.State != health.StateDegraded || he.Reason != health.ReasonTokenEndpointUnreachable {
			t.Errorf("Classify(%v) = %s/%s", rerr, he.State, he.Reason)
		}
		if !strings.Contains(he.Advice, "HTTPS_PROXY") || he.Detail() != "could not reach "+tc.host+": "+ue.Why {
			t.Errorf("Classify(%v): advice %q, last error %q", rerr, he.Advice, he.Detail())
		}
	}
	if Unreachable(nil, context.Canceled) != nil {
		t.Error("an interruption is taken for an unreachable endpoint")
	}
}
