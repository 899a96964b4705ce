package signin_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"testing"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/signin"
)

// A local process that reaches the loopback redirect port first with a
// state of its own is answered 400 and ignored: the real redirect that
// follows completes the sign-in.
func TestBrowserIgnoresForgedState(t *testing.T) {
	idp := newIdP(t)
	var out testkit.SyncBuffer
	s := &signin.SignIn{Account: signInAccount(t, idp), Out: &out}
	done := make(chan struct{})
	var g *auth.Grant
	var err error
	go func() { g, err = s.Browser(context.Background()); close(done) }()
	waitOutput(t, &out, "paste it here", done)
	authURL := regexp.MustCompile(`(?m)^\s+(http://\S+/authorize\?\S+)`).FindStringSubmatch(out.String())[1]
	u, _ := url.Parse(authURL)
	redirectURI := u.Query().Get("redirect_uri")

	for _, forged := range []string{"?code=forged&state=wrong", "?error=access_denied&state=wrong", "?code=forged"} {
		resp, herr := http.Get(redirectURI + "/" + forged)
		if herr != nil {
			t.Fatal(herr)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("forged redirect %s answered %s, want 400", forged, resp.Status)
		}
	}
	select {
	case <-done:
		t.Fatalf("a forged redirect ended the sign-in: %v\n%s", err, out.String())
	default:
	}

	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, herr := c.Get(authURL)
	if herr != nil {
		t.Fatal(herr)
	}
	resp.Body.Close()
	resp, herr = http.Get(resp.Header.Get("Location")) // the browser follows the redirect
	if herr != nil {
		t.Fatal(herr)
	}
	resp.Body.Close()
	<-done
	if err != nil || g == nil || g.Subject != "support@example.com" {
		t.Fatalf("Browser() = %+v, %v; want the real redirect to complete the sign-in\n%s", g, err, out.String())
	}
}
