package proxy

// Recorder is told what the listeners do, for metrics (status.Metrics is
// one). Its methods are called from any goroutine and must not block.
type Recorder interface {
	// Login counts a login's outcome ("ok", "bad_credentials",
	// "locked_out", "limited", "upstream_failed", ...) for account ("" when
	// unknown); protocol is "imap" or "smtp".
	Login(protocol, account, outcome string)
	// Refused counts a connection or login that a limit refused
	// ("sessions", "per_address" or "per_account").
	Refused(protocol, limit string)
	// SessionEnd counts a session's end: its account ("" before login),
	// bytes from the client (in) and to it (out; 0 for SMTP).
	SessionEnd(protocol, account string, in, out uint64)
}

// nopRecorder records nothing.
type nopRecorder struct{}

func (nopRecorder) Login(string, string, string)              {}
func (nopRecorder) Refused(string, string)                    {}
func (nopRecorder) SessionEnd(string, string, uint64, uint64) {}
