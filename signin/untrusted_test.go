package signin_test

import (
	"strings"
	"testing"
)

// An ID token whose claims hold terminal escapes is refused with the
// escapes shown, not sent.
func TestSignInEscapesClaims(t *testing.T) {
	idp := newIdP(t)
	idp.SignInAs("intruder\x1b[2J\x1b]0;x\x07@example.org")
	g, err := pastedSignIn(t, idp, func(loc string) string { return loc })
	if g != nil || err == nil {
		t.Fatalf("Browser() = %v, %v; want the wrong account refused", g, err)
	}
	if strings.ContainsAny(err.Error(), "\x1b\x07") || !strings.Contains(err.Error(), `intruder\x1b[2J\x1b]0;x\x07@example.org`) {
		t.Errorf("Browser() = %q: want the claim with its escapes shown as text", err)
	}
}
