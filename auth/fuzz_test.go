package auth

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/relayd/relayd/config"
)

// answerTransport answers every request with one canned response.
type answerTransport struct {
	status      int
	contentType string
	body        []byte
}

func (a answerTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		io.Copy(io.Discard, r.Body)
		r.Body.Close()
	}
	return &http.Response{StatusCode: a.status, Header: http.Header{"Content-Type": {a.contentType}},
		Body: io.NopCloser(bytes.NewReader(a.body)), Request: r}, nil
}

// FuzzTokenAnswer has the token endpoint answer a refresh with arbitrary
// status, content type and body (OAuth JSON, Microsoft's AADSTS errors,
// Google's form encoding, HTML from a proxy): relayd gets a token or an
// error it can classify, whose text is one line, and never panics.
func FuzzTokenAnswer(f *testing.F) {
	const js = "application/json"
	for _, s := range []struct {
		status int
		ct     string
		body   string
	}{
		{200, js, `{"access_token":"at","token_type":"Bearer","expires_in":3599,"refresh_token":"rt2","scope":"https://outlook.office.com/IMAP.AccessAsUser.All"}`},
		{200, js, `{"access_token":"at","expires_in":"3599","id_token":"x.y.z"}`},
		{200, "text/plain", "access_token=at&expires_in=3600&token_type=bearer"},
		{400, js, `{"error":"invalid_grant","error_description":"AADSTS70008: The provided authorization code or refresh token has expired due to inactivity.\r\nTrace ID: x","error_codes":[70008]}`},
		{400, js, `{"error":"invalid_grant","error_description":"Token has been expired or revoked."}`},
		{401, js, `{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided."}`},
		{400, js, `{"error":"interaction_required","error_description":"AADSTS50076: \u001b[2J MFA"}`},
		{503, "text/html", "<html>Service Unavailable</html>"},
		{200, js, `{}`},
		{200, js, `{"access_token":""}`},
		{429, js, `{"error":1}`},
	} {
		f.Add(s.status, s.ct, []byte(s.body))
	}
	accts := []*config.Account{
		{Name: "support", Provider: "office365", Email: "support@example.com", ClientID: "client", TokenURL: "https://login.microsoftonline.com/common/oauth2/v2.0/token"},
		{Name: "sales", Provider: "gmail", Email: "sales@example.com", ClientID: "client", TokenURL: "https://oauth2.googleapis.com/token"},
	}
	f.Fuzz(func(t *testing.T, status int, contentType string, body []byte) {
		if status < 100 || status > 999 {
			return
		}
		hc := &http.Client{Transport: answerTransport{status, contentType, body}}
		for _, a := range accts {
			g, err := ImportRefreshToken(context.Background(), a, hc, "rt-secret")
			if err == nil {
				if g == nil || g.RefreshToken == "" {
					t.Fatalf("a grant without a refresh token: %+v", g)
				}
				continue
			}
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", err)
			}
			he := Classify(a, err)
			for _, s := range []string{he.Advice, he.Client} {
				if strings.ContainsAny(s, "\r\n") {
					t.Fatalf("condition text is not one line: %q", s)
				}
			}
		}
	})
}
