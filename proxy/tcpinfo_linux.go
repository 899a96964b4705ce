package proxy

import (
	"net"

	"golang.org/x/sys/unix"
)

// tcpBytes returns the bytes a TCP connection received and sent (acked by
// the peer), from TCP_INFO (Linux 4.6 and later).
func tcpBytes(c net.Conn) (in, out uint64, ok bool) {
	tc, isTCP := c.(*net.TCPConn)
	if !isTCP {
		return 0, 0, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var info *unix.TCPInfo
	rc.Control(func(fd uintptr) { info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO) })
	if err != nil || info == nil {
		return 0, 0, false
	}
	return info.Bytes_received, info.Bytes_acked, true
}
