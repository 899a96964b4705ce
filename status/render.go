package status

import (
	"fmt"
	"io"
	"text/tabwriter"
	"time"
)

// Render writes st as a table for people: the banner, then one line per
// account with what to do where something is wrong.
func Render(w io.Writer, st *Status, now time.Time) {
	fmt.Fprintln(w, st.Banner)
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tEMAIL\tPROVIDER\tDIRECTION\tSTATE\tTOKEN EXPIRES\tLAST REFRESH\tIMAP")
	for _, a := range st.Accounts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", a.Name, a.Email, a.Provider, a.Direction,
			a.Token.State, ago(a.Token.AccessTokenExpiry, now), ago(a.Token.LastRefresh, now), a.IMAPSessions)
	}
	tw.Flush()
	for _, a := range st.Accounts {
		if a.Token.Advice == "" && a.Token.LastError == "" {
			continue
		}
		fmt.Fprintf(w, "\n%s: %s\n", a.Name, a.Token.State)
		if a.Token.Advice != "" {
			fmt.Fprintf(w, "  what to do: %s\n", a.Token.Advice)
		}
		if a.Token.LastError != "" {
			fmt.Fprintf(w, "  last error: %s (%s)\n", a.Token.LastError, ago(a.Token.LastErrorAt, now))
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
