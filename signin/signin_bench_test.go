package signin_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"testing"
	"time"

	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/signin"
)

var benchAuthURL = regexp.MustCompile(`^\s+(http://\S+/authorize\?\S+)`)

// BenchmarkBrowserSignInPasted measures relayd's own time for a browser
// sign-in finished by a pasted URL, against the fake IdP on loopback: from
// the paste to the verified grant (code exchange with PKCE, OpenID
// discovery, JWKS, ID token check). The person's part (the browser) is not
// timed. go test -bench BrowserSignIn -run - ./signin
func BenchmarkBrowserSignInPasted(b *testing.B) {
	idp := testkit.StartIdP(b)
	a := testkit.Account{Name: "support", Provider: "custom", Email: "support@example.com", ClientID: "client",
		TokenURL: idp.TokenURL(), AuthURL: idp.AuthURL(), Issuer: idp.IssuerURL(),
		Direction: "outgoing", SMTPServer: "127.0.0.1:587", LocalPasswordHash: testkit.UnusedHash}.Parsed(b)
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	var total time.Duration
	for i := 0; i < b.N; i++ {
		outR, outW := io.Pipe()
		inR, inW := io.Pipe()
		s := &signin.SignIn{Account: a, Out: outW, In: inR}
		done := make(chan error, 1)
		go func() {
			_, err := s.Browser(context.Background())
			outW.Close()
			done <- err
		}()
		sc := bufio.NewScanner(outR)
		var authURL string
		for authURL == "" && sc.Scan() {
			if m := benchAuthURL.FindStringSubmatch(sc.Text()); m != nil {
				authURL = m[1]
			}
		}
		go io.Copy(io.Discard, outR)
		resp, err := noRedirect.Get(authURL)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		start := time.Now()
		fmt.Fprintln(inW, resp.Header.Get("Location"))
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		total += time.Since(start)
		inW.Close()
	}
	b.ReportMetric(total.Seconds()*1000/float64(b.N), "ms/paste-to-grant")
}
