package signin

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/relayd/relayd/config"
)

// The error= and error_description of a redirect are shown as text.
func TestRedirectErrorEscaped(t *testing.T) {
	a := &config.Account{Name: "support"}
	err := redirectError(a, "access_denied\x1b[2J", "no \x1b]0;x\x07 way "+strings.Repeat("x", 300<<10))
	if s := err.Error(); strings.ContainsAny(s, "\x1b\x07") || utf8.RuneCountInString(s) > 1000 || !strings.Contains(s, `access_denied\x1b[2J`) {
		t.Errorf("redirectError() = %.300q", s)
	}
}
