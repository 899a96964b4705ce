package status

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/health"
	"github.com/relayd/relayd/internal/safetext"
	"github.com/relayd/relayd/queue"
)

// Render writes st as a table for people: the banner, then one line per
// account with what to do where something is wrong.
func Render(w io.Writer, st *Status, now time.Time) {
	fmt.Fprintln(w, st.Banner)
	if st.Encryption.Warning != "" {
		fmt.Fprintf(w, "warning: %s\n", st.Encryption.Warning)
	}
	if f := st.SpoolFailing; f != nil {
		fmt.Fprintf(w, "the spool cannot store mail: %d submissions refused with 452 since %s, the last with: %s; free space or make state_dir writable (relayd's log says which)\n",
			f.Refused, f.Since.Local().Format("2006-01-02 15:04:05"), safetext.Line(f.LastError))
	}
	for _, l := range st.LockedOut {
		fmt.Fprintf(w, "local user %s is locked out after repeated failed logins until %s: find the client with the wrong password\n",
			l.User, l.Until.Local().Format("15:04:05"))
	}
	for _, c := range st.Certificates {
		if !c.ExpiresSoon {
			continue
		}
		verb := "expires"
		if !c.NotAfter.After(now) {
			verb = "expired"
		}
		fmt.Fprintf(w, "the %s listeners' certificate (%s, %s) %s %s: replace %s and its key, then run 'relayd reload'\n",
			c.Protocol, safetext.Terminal(c.Subject), c.File, verb, c.NotAfter.Local().Format("2006-01-02 15:04"), c.File)
	}
	for _, o := range st.OrphanedAccounts {
		fmt.Fprintf(w, "account %s is not configured any more and has %d queued, %d held, %d failed message(s) kept: add it back to the configuration and reload, or delete them with 'relayd queue delete %s'\n",
			o.Account, o.Queued, o.Held, o.Failed, o.Account)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tEMAIL\tPROVIDER\tDIRECTION\tSTATE\tTOKEN EXPIRES\tLAST REFRESH\tGRANT ENDS\tIMAP\tPOP3\tWARM\tQUEUED\tHELD\tFAILED")
	for _, a := range st.Accounts {
		state := a.State
		var q queue.AccountStats
		if a.Queue != nil {
			q = *a.Queue
		}
		ends := "-"
		if !a.GrantExpires.IsZero() {
			ends = a.GrantExpires.Local().Format("2006-01-02")
		}
		dir := a.Direction
		if a.Transport == config.TransportGraph {
			dir += " (graph)" // sends through Microsoft Graph
		}
		warm := a.WarmIMAP.String()
		if a.WarmPOP3 != nil {
			warm += " pop3 " + a.WarmPOP3.String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%d\n", a.Name, a.Email, a.Provider, dir,
			state, ago(a.Token.AccessTokenExpiry, now), ago(a.Token.LastRefresh, now), ends, a.IMAPSessions, a.POP3Sessions,
			warm, q.Queued, q.Held, q.Failed)
	}
	tw.Flush()
	for _, a := range st.Accounts {
		state, advice := a.State, a.Advice
		lastErr, lastErrAt := a.LastError, a.LastErrorAt
		fb := (*queue.FallbackStats)(nil)
		if a.Queue != nil {
			fb = a.Queue.Fallback
		}
		if advice == "" && lastErr == "" && a.Warning == "" && a.AdminHoldSince.IsZero() && len(a.Quarantined) == 0 &&
			(fb == nil || !fb.Active && !fb.ForcedRewrite && a.Queue.SentViaFallback == 0) {
			continue
		}
		if a.NotAuthorized() {
			fmt.Fprintf(w, "\n%s: not authorized yet (%s, %s)\n", a.Name, state, a.Reason)
		} else {
			fmt.Fprintf(w, "\n%s: %s\n", a.Name, state)
		}
		if advice != "" {
			fmt.Fprintf(w, "  what to do: %s\n", safetext.Terminal(advice))
		}
		// A condition without an error of its own (no_grant) has its
		// advice as its last error: said once.
		if lastErr != "" && lastErr != advice {
			fmt.Fprintf(w, "  last error: %s (%s)\n", safetext.Terminal(lastErr), ago(lastErrAt, now))
		}
		if !a.HeldSince.IsZero() {
			fmt.Fprintf(w, "  outgoing mail held since %s; nothing bounces, it is sent once this is fixed\n", ago(a.HeldSince, now))
		}
		if !a.AdminHoldSince.IsZero() {
			fmt.Fprintf(w, "  outgoing mail held by an admin since %s: 'relayd queue release %s' sends it\n", ago(a.AdminHoldSince, now), a.Name)
		}
		if fb != nil {
			renderFallback(w, a.Name, fb, a.Queue.SentViaFallback, now)
		}
		for _, id := range slices.Sorted(maps.Keys(a.Quarantined)) {
			fmt.Fprintf(w, "  message %s held: %s\n", id, safetext.Terminal(a.Quarantined[id]))
		}
		if a.Warning != "" && state != health.StateWarning {
			fmt.Fprintf(w, "  also: %s\n", a.Warning)
		}
		if a.Panics > 0 {
			fmt.Fprintf(w, "  %d internal error(s) recovered; the log has their stack traces\n", a.Panics)
		}
	}
}

// renderFallback says what account name's fallback mailbox does: sending
// its mail (since when, how, how many), about to, or unable to.
func renderFallback(w io.Writer, name string, fb *queue.FallbackStats, sent int64, now time.Time) {
	how := "From rewritten to its mailbox, Reply-To the sender"
	if fb.Mode == "keep" {
		how = "the sender's From kept"
	}
	switch {
	case fb.Active:
		fmt.Fprintf(w, "  outgoing mail goes out through fallback account %s since %s (%s); %d sent so far\n", fb.Account, ago(fb.Starts, now), how, sent)
	case fb.Blocked != "":
		fmt.Fprintf(w, "  fallback account %s cannot take this account's mail: %s\n", fb.Account, safetext.Terminal(fb.Blocked))
	case !fb.Starts.IsZero():
		fmt.Fprintf(w, "  outgoing mail goes out through fallback account %s %s unless this is fixed first (%s)\n", fb.Account, ago(fb.Starts, now), how)
	case sent > 0:
		fmt.Fprintf(w, "  %d message(s) went out through fallback account %s since relayd started\n", sent, fb.Account)
	}
	if fb.ForcedRewrite {
		fmt.Fprintf(w, "  fallback account %s may not send as account %s's address (SendAsDenied): it rewrites From until 'relayd authorize %s'; to keep From, give it Send As rights\n", fb.Account, name, name)
	}
}

// ago renders t relative to now: "in 52m", "3m ago", or "-".
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := t.Sub(now).Round(time.Second)
	if d >= 0 {
		return "in " + short(d)
	}
	return short(-d) + " ago"
}

func short(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", d/(24*time.Hour))
	case d >= time.Hour:
		return fmt.Sprintf("%dh%02dm", d/time.Hour, d%time.Hour/time.Minute)
	case d >= time.Minute:
		return fmt.Sprintf("%dm", d/time.Minute)
	default:
		return fmt.Sprintf("%ds", d/time.Second)
	}
}
