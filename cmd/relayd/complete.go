package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/status"
)

// runComplete is the hidden `relayd __complete accounts|ids [-c FILE]`
// that the shell completions call: it prints account names (from the
// status socket, else the configuration) or queue IDs (from the status
// socket), one a line. Whatever fails, it prints nothing and exits 0: a
// completion must never show an error or block the shell for long.
func runComplete(args []string, w io.Writer) {
	what, path := "", defaultConfig
	for i := 0; i < len(args); i++ {
		switch a := args[i]; {
		case a == "-c" || a == "--c":
			if i+1 < len(args) {
				path = args[i+1]
				i++
			}
		case what == "":
			what = a
		}
	}
	cfg, cfgErr := config.Load(path)
	socket := config.Defaults().StatusSocket
	if cfgErr == nil {
		socket = cfg.StatusSocket
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c := status.NewClient(socket)
	var words []string
	switch what {
	case "accounts":
		if st, err := c.Status(ctx); err == nil {
			for _, a := range st.Accounts {
				words = append(words, a.Name)
			}
		} else if cfgErr == nil {
			words = cfg.AccountNames()
		}
	case "ids":
		if l, err := c.QueueList(ctx); err == nil {
			for _, e := range l {
				words = append(words, e.ID)
			}
		}
	}
	slices.Sort(words)
	for _, w2 := range slices.Compact(words) {
		fmt.Fprintln(w, w2)
	}
}

func init() {
	hidden["__complete"] = func(args []string) int {
		runComplete(args, os.Stdout)
		return 0
	}
}
