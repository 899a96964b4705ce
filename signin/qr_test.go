package signin_test

import (
	"strings"
	"testing"

	"github.com/relayd/relayd/signin"
)

// QRModules is the code alone: square, of a QR size (21 + 4k modules),
// with the finder patterns' dark corners at its own corners (no quiet
// zone).
func TestQRModules(t *testing.T) {
	for _, text := range []string{"https://microsoft.com/devicelogin", "https://www.google.com/device?user_code=" + strings.Repeat("ABCD-EFGH", 20)} {
		m, err := signin.QRModules(text)
		if err != nil {
			t.Fatalf("QRModules(%q) = %v", text, err)
		}
		n := len(m)
		if n < 21 || (n-21)%4 != 0 {
			t.Fatalf("QRModules(%q) is %d modules on a side; want 21 + 4k", text, n)
		}
		for y, row := range m {
			if len(row) != n {
				t.Fatalf("row %d of QRModules(%q) has %d modules; want %d (square)", y, text, len(row), n)
			}
		}
		if !m[0][0] || !m[0][n-1] || !m[n-1][0] || !m[0][6] || m[1][1] {
			t.Errorf("QRModules(%q): no finder pattern at the corners", text)
		}
	}
	if _, err := signin.QRModules(strings.Repeat("x", 8000)); err == nil {
		t.Error("QRModules of 8000 bytes: want an error (more than a QR code holds)")
	}
}
