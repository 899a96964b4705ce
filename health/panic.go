package health

import (
	"fmt"
	"log/slog"
	"runtime/debug"
	"sync/atomic"
)

var panics atomic.Int64

// Recovered logs a panic that a long-lived goroutine recovered, with its
// stack and the account (h may be nil when no account is concerned), and
// counts it. Call it with the value of recover() in a deferred function:
//
//	defer func() {
//		if v := recover(); v != nil {
//			health.Recovered(log, h, "delivering mail", v)
//		}
//	}()
func Recovered(log *slog.Logger, h *Account, what string, v any) {
	panics.Add(1)
	attrs := []any{"panic", fmt.Sprint(v), "stack", string(debug.Stack())}
	if h != nil {
		h.Panic()
		attrs = append(attrs, "account", h.Name())
	}
	log.Error("internal error recovered while "+what+"; relayd carries on, please report it with this stack", attrs...)
}

// Panics is how many panics relayd recovered since it started.
func Panics() int64 { return panics.Load() }
