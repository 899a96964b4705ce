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
	for _, l := range st.LockedOut {
		fmt.Fprintf(w, "local user %s is locked out after repeated failed logins until %s: find the client with the wrong password\n",
			l.User, l.Until.Local().Format("15:04:05"))
	}
	for _, o := range st.OrphanedAccounts {
		fmt.Fprintf(w, "account %s is not configured any more and has %d queued, %d held, %d failed message(s) kept: add it back to the configuration and reload, or delete them with 'relayd queue delete %s'\n",
			o.Account, o.Queued, o.Held, o.Failed, o.Account)
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tEMAIL\tPROVIDER\tDIRECTION\tSTATE\tTOKEN EXPIRES\tLAST REFRESH\tGRANT ENDS\tIMAP\tQUEUED\tHELD\tFAILED")
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
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", a.Name, a.Email, a.Provider, dir,
			state, ago(a.Token.AccessTokenExpiry, now), ago(a.Token.LastRefresh, now), ends, a.IMAPSessions,
			q.Queued, q.Held, q.Failed)
	}
	tw.Flush()
	for _, a := range st.Accounts {
		state, advice := a.State, a.Advice
		lastErr, lastErrAt := a.LastError, a.LastErrorAt
		if advice == "" && lastErr == "" && a.Warning == "" && a.AdminHoldSince.IsZero() && len(a.Quarantined) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n%s: %s\n", a.Name, state)
		if advice != "" {
			fmt.Fprintf(w, "  what to do: %s\n", safetext.Terminal(advice))
		}
		if lastErr != "" {
			fmt.Fprintf(w, "  last error: %s (%s)\n", safetext.Terminal(lastErr), ago(lastErrAt, now))
		}
		if !a.HeldSince.IsZero() {
			fmt.Fprintf(w, "  outgoing mail held since %s; nothing bounces, it is sent once this is fixed\n", ago(a.HeldSince, now))
		}
		if !a.AdminHoldSince.IsZero() {
			fmt.Fprintf(w, "  outgoing mail held by an admin since %s: 'relayd queue release %s' sends it\n", ago(a.AdminHoldSince, now), a.Name)
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
