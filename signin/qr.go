package signin

import (
	"fmt"

	"rsc.io/qr"
)

// QRModules returns the modules of a QR code of text, with error
// correction level L as on a terminal (Device): modules[y][x] is true for
// a dark module, and the code is len(modules) modules on each side. The
// quiet zone around it (4 modules, ISO/IEC 18004) is not included: the
// caller adds the margin. For showing VerificationURI where there is no
// terminal (the web console draws it as an image).
func QRModules(text string) ([][]bool, error) {
	c, err := qr.Encode(text, qr.L)
	if err != nil {
		return nil, fmt.Errorf("QR code: %w", err)
	}
	modules := make([][]bool, c.Size)
	for y := range modules {
		row := make([]bool, c.Size)
		for x := range row {
			row[x] = c.Black(x, y)
		}
		modules[y] = row
	}
	return modules, nil
}
