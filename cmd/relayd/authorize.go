package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/status"
)

func runAuthorize(args []string) error {
	fs := newFlagSet("authorize")
	cfgPath := configFlag(fs)
	rtFile := fs.String("refresh-token-file", "", "import the refresh token in `file` (issued to this account's client_id)")
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		return err
	}
	name, err := oneName(pos, "account name")
	if err != nil {
		return err
	}
	cfg, err := loadConfig(*cfgPath)
	if err != nil {
		return err
	}
	a := cfg.Account(name)
	if a == nil {
		return fmt.Errorf("no account %q in %s (accounts: %s)", name, *cfgPath, strings.Join(cfg.AccountNames(), ", "))
	}
	if !a.OAuth() {
		return fmt.Errorf("account %q uses provider \"password\": put the upstream password in %s instead", name, a.PasswordFile)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	var g *auth.Grant
	switch {
	case *rtFile != "":
		rt, err := auth.ReadSecretFile(*rtFile)
		if err != nil {
			return fmt.Errorf("reading refresh token: %w", err)
		}
		if g, err = auth.ImportRefreshToken(ctx, a, nil, rt); err != nil {
			return err
		}
	case a.Grant == config.GrantClientCredentials:
		// App-only access has no grant to store: check that the client
		// credentials work, which is what an admin wants to know.
		src, err := auth.NewSource(auth.SourceOptions{Account: a, Store: &auth.Store{Dir: os.TempDir()}})
		if err != nil {
			return err
		}
		if _, err := src.Token(ctx); err != nil {
			return err
		}
		fmt.Printf("account %q: the client credentials work; nothing needs storing\n", name)
		return nil
	default:
		return fmt.Errorf("interactive authorization (browser or device code) is not in this version yet; import a refresh token issued to client %s with: relayd authorize %s --refresh-token-file FILE", a.ClientID, name)
	}
	return handOver(ctx, cfg, name, g)
}

// handOver gives g to the running daemon, which stores it and uses it at
// once; when no daemon runs, it writes the token store directly.
func handOver(ctx context.Context, cfg *config.Config, name string, g *auth.Grant) error {
	err := status.NewClient(cfg.StatusSocket).InstallGrant(ctx, name, g)
	switch {
	case err == nil:
		fmt.Printf("account %q authorized; the running daemon uses the new grant now\n", name)
		return nil
	case errors.Is(err, status.ErrNotRunning):
		store := &auth.Store{Dir: cfg.StateDir}
		if err := store.Save(name, g); err != nil {
			return err
		}
		fmt.Printf("account %q authorized; relayd is not running, the grant is stored in %s for its next start\n", name, cfg.StateDir)
		return nil
	default:
		return err
	}
}
