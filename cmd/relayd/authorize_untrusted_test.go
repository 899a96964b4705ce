package main

import (
	"fmt"
	"strings"
	"testing"
)

// What the identity provider wrote (an ID token's claims, a redirect's
// error= and error_description) reaches the terminal with its escape
// sequences shown as text, never sent.
func TestAuthorizePrintsNoIdPEscapes(t *testing.T) {
	t.Run("claim", func(t *testing.T) {
		e := interactiveEnv(t, "")
		r := e.startAuthorize()
		code := r.waitLine(userCodeRe)[1]
		e.idp.SignInAs("intruder\x1b[2J\x1b]0;owned\x07@example.org")
		e.idp.ApproveDevice(code, mbox)
		out, exit := r.wait()
		if exit == 0 || strings.ContainsAny(out, "\x1b\x07") || !strings.Contains(out, `the sign-in was as intruder\x1b[2J\x1b]0;owned\x07@example.org`) {
			t.Errorf("exit %d, want the claim shown with its escapes as text:\n%q", exit, out)
		}
	})
	t.Run("error=", func(t *testing.T) {
		e := interactiveEnv(t, "")
		e.idp.FailNextAuthorization("access_denied\x1b[31m", "AADSTS65004: \x1b]0;owned\x07declined\r")
		r := e.startAuthorize("--browser")
		fmt.Fprintln(r.stdin, browse(t, r.waitLine(authURLRe)[1]))
		out, exit := r.wait()
		if exit == 0 || strings.ContainsAny(out, "\x1b\x07\r") || !strings.Contains(out, `access_denied\x1b[31m: AADSTS65004: \x1b]0;owned\x07declined`) {
			t.Errorf("exit %d, want error= shown with its escapes as text:\n%q", exit, out)
		}
	})
}
