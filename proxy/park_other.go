//go:build !linux

package proxy

import (
	"errors"
	"syscall"
)

// Without epoll nothing parks: a direction waits in its goroutine.

// canPark: directions may park here.
const canPark = false

func register(rc syscall.RawConn, id uint64) error {
	return errors.New("parking needs Linux's epoll")
}

func unregister(rc syscall.RawConn) {}
