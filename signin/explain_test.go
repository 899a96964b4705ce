package signin

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"golang.org/x/oauth2"

	"github.com/relayd/relayd/config"
)

// The sign-in errors a wrong app registration produces are explained
// where the admin sees them: what happened and what to change.
func TestSignInErrorsExplained(t *testing.T) {
	ms := &config.Account{Name: "support", Provider: "office365"}
	gm := &config.Account{Name: "gm", Provider: "gmail"}
	retrieve := func(code, desc string) *oauth2.RetrieveError {
		return &oauth2.RetrieveError{ErrorCode: code, ErrorDescription: desc, Body: []byte(`{"error":"` + code + `"}`)}
	}
	for _, tc := range []struct {
		name string
		err  error
		want []string
	}{
		{"AADSTS50194 at the token step", deviceError(ms, retrieve("invalid_request", "AADSTS50194: Application 'x' is not configured as a multi-tenant application.")),
			[]string{`account "support"`, "single-tenant", "set tenant to the tenant id or domain"}},
		{"AADSTS700016", deviceError(ms, retrieve("unauthorized_client", "AADSTS700016: Application with identifier 'x' was not found in the directory 'y'.")),
			[]string{"no application with this client id is registered in the tenant", "check client_id"}},
		{"AADSTS7000218", deviceError(ms, retrieve("invalid_client", "AADSTS7000218: The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")),
			[]string{"wants a client secret or certificate", "Allow public client flows", "client_secret_file"}},
		{"AADSTS65001 in a redirect", redirectError(ms, "consent_required", "AADSTS65001: The user or administrator has not consented to use the application."),
			[]string{"needs an administrator's consent", "AADSTS65001"}},
		{"AADSTS50194 in a redirect", redirectError(ms, "invalid_request", "AADSTS50194: Application is not configured as a multi-tenant application."),
			[]string{"single-tenant", "set tenant"}},
		{"Google access_denied (Testing app)", redirectError(gm, "access_denied", ""),
			[]string{"Testing publishing status lets only its test users sign in", "Test users"}},
		{"Google redirect_uri_mismatch", redirectError(gm, "redirect_uri_mismatch", "Bad Request"),
			[]string{"does not accept relayd's loopback redirect", "Desktop app"}},
		{"Google invalid_client", deviceError(gm, retrieve("invalid_client", "Unauthorized")),
			[]string{"Google does not know this OAuth client, or its secret is wrong", "client_secret_file"}},
		{"an unknown error stays as it was", deviceError(ms, retrieve("server_error", "try later")),
			[]string{"the identity provider refused the sign-in (token endpoint said server_error: try later); nothing was stored"}},
	} {
		for _, w := range tc.want {
			if !strings.Contains(tc.err.Error(), w) {
				t.Errorf("%s: %q\nwant %q", tc.name, tc.err, w)
			}
		}
	}
}

// A device authorization endpoint that refuses the app (single-tenant
// registration through "organizations") gets its explanation too.
func TestDeviceAuthorizationRefusalExplained(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, `{"error":"invalid_request","error_description":"AADSTS50194: Application 'c' is not configured as a multi-tenant application.","error_codes":[50194]}`)
	}))
	defer srv.Close()
	a := &config.Account{Name: "support", Provider: "office365", ClientID: "c", DeviceFlow: true,
		DeviceAuthURL: srv.URL + "/devicecode", TokenURL: srv.URL + "/token", Scopes: []string{"offline_access"}}
	s := &SignIn{Account: a, Out: io.Discard, HTTPClient: srv.Client()}
	_, err := s.Device(context.Background())
	if err == nil || !strings.Contains(err.Error(), "did not start a sign-in") || !strings.Contains(err.Error(), "set tenant to the tenant id or domain") {
		t.Errorf("Device() = %v", err)
	}
}
