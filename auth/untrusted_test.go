package auth

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/oauth2"

	"github.com/relayd/relayd/config"
)

// What a token endpoint writes reaches the log, status, the hook and the
// terminal bounded and with its control characters escaped, whatever the
// classification.
func TestClassifyBoundsIdPText(t *testing.T) {
	huge := "bad \x1b[2J\x1b]0;x\x07 client " + strings.Repeat("padding ", 300<<10/8)
	refresh := &config.Account{Name: "support", TokenURL: "https://login.example.com/token"}
	app := &config.Account{Name: "app", TokenURL: "https://login.example.com/token", Grant: config.GrantClientCredentials, ClientSecretFile: "/etc/relayd/app.secret"}
	for _, tc := range []struct {
		name string
		a    *config.Account
		re   *oauth2.RetrieveError
	}{
		{"unknown code", refresh, &oauth2.RetrieveError{Response: &http.Response{StatusCode: 400}, ErrorCode: "weird\x1b[31m" + strings.Repeat("x", 1000), ErrorDescription: huge}},
		{"app-only", app, &oauth2.RetrieveError{Response: &http.Response{StatusCode: 401}, ErrorCode: "invalid_client", ErrorDescription: huge}},
		{"unparsed body", app, &oauth2.RetrieveError{Response: &http.Response{StatusCode: 400}, Body: []byte(`{"error":"invalid_client","error_description":"` + strings.ReplaceAll(huge, "\x1b", `\u001b`) + `"}`)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := Classify(tc.a, tc.re)
			for what, s := range map[string]string{"advice": e.Advice, "detail": e.Detail(), "client": e.Client, "error": e.Error()} {
				if n := utf8.RuneCountInString(s); n > 1200 {
					t.Errorf("%s has %d characters", what, n)
				}
				if strings.ContainsAny(s, "\x1b\x07\x00\r\n") {
					t.Errorf("%s carries control characters: %.120q", what, s)
				}
			}
		})
	}
	if d := Describe(errors.New("dial tcp: \x1b[2Jlookup")); strings.ContainsRune(d, 0x1b) {
		t.Errorf("Describe(other error) = %q", d)
	}
}
