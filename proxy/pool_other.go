//go:build !linux

package proxy

import "net"

// peekAlive is known only on Linux; elsewhere aliveConn falls back to a
// read with a deadline already past.
func peekAlive(net.Conn) (ok, known bool) { return false, false }
