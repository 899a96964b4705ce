// Package fault is relayd's one registry of fault points: named places in
// the code where a test makes relayd fail — panic, exit as if killed, or
// wait — to check that nothing is lost. Production code calls Hit with the
// point's name; when nothing is armed that costs one atomic load.
//
// Tests arm the registry with Arm. The crash test arms it in the real
// binary through the environment variable RELAYD_FAILPOINT (see
// cmd/relayd/serve.go). There is one registry per process: tests that arm
// it do not run in parallel with each other.
//
// The points, in the order a message meets them:
//
//	smtp-data           the SMTP session, before a message is queued
//	after-write         the spool, after a new message file is written whole, before its fsync
//	after-sync          the spool, after the message file's fsync, before the directory's
//	deliver             the scheduler, before each message's delivery
//	after-upstream-250  the SMTP transport, after the upstream accepted the message
//	dsn                 the queue, while building a bounce
//	refresh             the token source, before each token request
//	imap-session        the IMAP proxy, as each session starts
package fault

import "sync/atomic"

// Func is what an armed registry runs at each point it reaches.
type Func func(point string)

var armed atomic.Pointer[Func]

// Arm makes fn run at every fault point reached until disarm is called.
func Arm(fn Func) (disarm func()) {
	armed.Store(&fn)
	return func() { armed.CompareAndSwap(&fn, nil) }
}

// Hit runs the armed function, if any, at the fault point named point.
func Hit(point string) {
	if fn := armed.Load(); fn != nil {
		(*fn)(point)
	}
}
