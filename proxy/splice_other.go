//go:build !linux

package proxy

import (
	"net"
	"time"
)

// spliceTCP copies src to dst through cs until src ends, or dst takes
// nothing for wt. Only Linux has splice(2); elsewhere a buffered copy does.
func spliceTCP(dst, src *net.TCPConn, wt time.Duration, cs *clientStream, w *dirWait) error {
	return copyCoalesce(dst, src, wt, cs, w)
}
