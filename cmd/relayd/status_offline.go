package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
)

// mayReadState reports whether this process may read the state directory
// for an offline view: root, or its owner (the service user). Others get
// "not running" only, as through the socket they would get only what its
// group may read.
// A state directory not made yet has nothing to show (and root must not
// make it).
func mayReadState(dir string) bool {
	fi, err := os.Stat(dir)
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && (os.Geteuid() == 0 || int(st.Uid) == os.Geteuid())
}

// offlineStatus writes what the state directory says while the daemon is
// down: each configured account, its stored grant's age (read through
// auth.Store; no token is ever printed), and its queued, held and failed
// messages from the spool. Conditions live in the daemon's memory: there
// are none to show. Root becomes the state directory's owner first.
func offlineStatus(w io.Writer, cfg *config.Config, now time.Time) error {
	q, err := openSpool(cfg, 2*time.Second)
	if err != nil {
		return fmt.Errorf("reading the spool in %s: %w", cfg.StateDir, err)
	}
	defer q.Close()
	store, keyErr := offlineStore(cfg)
	if keyErr != nil {
		store = &auth.Store{Dir: cfg.StateDir, Keys: auth.PlainKeyring("key_file " + cfg.KeyFile)}
	}
	fmt.Fprintf(w, "offline view from %s (states are known only to the running daemon):\n\n", cfg.StateDir)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ACCOUNT\tEMAIL\tPROVIDER\tDIRECTION\tGRANT\tLAST REFRESH\tQUEUED\tHELD\tFAILED")
	var todo []string
	waiting := false
	for _, a := range cfg.Accounts {
		grant, refreshed := "-", "-"
		held := false // its mail waits for a person, not for relayd to start
		switch g, err := store.Load(a.Name); {
		case !a.OAuth():
			grant = "password"
		case a.AppOnly():
			grant = "app-only"
		case errors.Is(err, auth.ErrUndecryptable) && keyErr != nil:
			grant = "encrypted"
			todo = append(todo, fmt.Sprintf("%s: %v", a.Name, keyErr))
		case errors.Is(err, auth.ErrUndecryptable):
			grant = "undecryptable"
			todo = append(todo, fmt.Sprintf("%s: %v: restore the key it was encrypted under to key_file, or run 'relayd authorize %s'", a.Name, err, a.Name))
		case errors.Is(err, auth.ErrNoGrant):
			grant, held = "none", true
			todo = append(todo, fmt.Sprintf("%s: not authorized yet: run 'relayd authorize %s'", a.Name, a.Name))
		case err != nil:
			grant = "unreadable"
			todo = append(todo, fmt.Sprintf("%s: %v", a.Name, err))
		default:
			grant = "granted " + short(now.Sub(g.GrantedAt)) + " ago"
			if !g.RefreshedAt.IsZero() {
				refreshed = short(now.Sub(g.RefreshedAt)) + " ago"
			}
		}
		st := q.Stats(a.Name)
		if since, ok := q.HeldForCondition(a.Name); ok && !held {
			held = true
			todo = append(todo, fmt.Sprintf("%s: its outgoing mail was held for its condition when relayd stopped (since %s): 'relayd status' with relayd running says what fixes it",
				a.Name, since.Local().Format("2006-01-02 15:04")))
		}
		if held {
			st.Held, st.Queued = st.Held+st.Queued, 0
		}
		if st.Queued > 0 {
			waiting = true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", a.Name, a.Email, a.Provider, a.Direction, grant, refreshed, st.Queued, st.Held, st.Failed)
	}
	tw.Flush()
	for _, o := range q.Orphans() {
		todo = append(todo, fmt.Sprintf("account %s is not configured any more and has %d queued, %d held, %d failed message(s) kept", o.Account, o.Queued, o.Held, o.Failed))
	}
	if len(todo) > 0 {
		fmt.Fprintln(w)
		for _, t := range todo {
			fmt.Fprintln(w, t)
		}
	}
	if waiting {
		fmt.Fprintln(w, "\nstart relayd (systemctl start relayd) to deliver the queued mail and see each mailbox's state")
	} else {
		fmt.Fprintln(w, "\nstart relayd (systemctl start relayd) to see each mailbox's state")
	}
	return nil
}

// short is d in the largest unit that fits: 3d, 5h, 12m, 40s.
func short(d time.Duration) string {
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
	case d >= time.Hour:
		return fmt.Sprintf("%dh", int(d/time.Hour))
	case d >= time.Minute:
		return fmt.Sprintf("%dm", int(d/time.Minute))
	}
	return fmt.Sprintf("%ds", int(d/time.Second))
}
