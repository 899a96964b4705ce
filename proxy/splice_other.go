//go:build !linux

package proxy

import (
	"io"
	"net"
)

// spliceTCP copies src to dst until src ends. Only Linux has splice(2);
// elsewhere io.Copy does what the platform offers.
func spliceTCP(dst, src *net.TCPConn) error {
	_, err := io.Copy(dst, src)
	return err
}
