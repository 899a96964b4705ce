package doctor

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/statedir"
)

// User is the user the service runs as, whose access to files is checked.
type User = config.ServiceUser

// ServiceUserOf is who relayd runs as with state directory dir
// (config.ServiceUserOf).
func ServiceUserOf(dir string) *User { return config.ServiceUserOf(dir) }

// groupName names gid for a chgrp command.
func groupName(gid int) string { return statedir.GroupName(gid) }

// Config runs the configuration's own checks: the file itself (parsed,
// and who may read or change it), state_dir (statedir.CheckPerms, and its
// owner) and admin_group.
func Config(cfg *config.Config, path string, o Options) []Result {
	o = o.withDefaults()
	if o.ServiceUser == nil {
		o.ServiceUser = ServiceUserOf(cfg.StateDir)
	}
	svc := o.ServiceUser
	n := len(cfg.Accounts)
	rs := []Result{pass("", "config", fmt.Sprintf("%s: valid, %d account(s)", path, n))}
	if n == 0 {
		rs[0] = fail("", "config", path+": no [[account]]", "add an [[account]] table: relayd serve refuses to start without one")
	}
	if fi, st, err := stat(path); err == nil {
		switch perm := fi.Mode().Perm(); {
		case perm&0o022 != 0:
			rs = append(rs, fail("", "config.mode", fmt.Sprintf("%s may be changed by others (mode %04o): whoever may write it chooses where relayd sends tokens", path, perm),
				fmt.Sprintf("chmod go-w %s", path)))
		case !statedir.Readable(path, uint32(svc.UID), svc.GIDs):
			rs = append(rs, fail("", "config.mode", fmt.Sprintf("%s cannot be read by %s, who runs relayd (owner %s, mode %04o)", path, svc, owner(st), perm),
				fmt.Sprintf("chgrp %s %s && chmod g+r %s (root:%s 0640 is the normal layout)", groupName(svc.GIDs[0]), path, path, groupName(svc.GIDs[0]))))
		default:
			if ws := cfg.ModeWarnings(path); len(ws) > 0 {
				rs = append(rs, warn("", "config.mode", ws[0], fmt.Sprintf("chmod o-r %s", path)))
			} else {
				rs = append(rs, pass("", "config.mode", fmt.Sprintf("%s: mode %04o, owner %s, readable by %s", path, perm, owner(st), svc)))
			}
		}
	}
	if err := statedir.CheckPerms(cfg.StateDir); err != nil {
		rs = append(rs, fail("", "state_dir", err.Error(), "change the mode or owner as said, so that nobody but root and relayd's user can change "+cfg.StateDir))
	} else if fi, err := os.Stat(cfg.StateDir); errors.Is(err, fs.ErrNotExist) {
		rs = append(rs, warn("", "state_dir", cfg.StateDir+" does not exist yet", "relayd makes it at its first start (or the unit's StateDirectory= does); run 'relayd authorize NAME' to store grants there"))
	} else if err != nil {
		rs = append(rs, fail("", "state_dir", err.Error(), "make "+cfg.StateDir+" a directory relayd's user owns"))
	} else if _, st, err := stat(cfg.StateDir); err == nil {
		rs = append(rs, pass("", "state_dir", fmt.Sprintf("%s: owner %s, mode %04o, nobody else may change it; relayd runs as %s",
			cfg.StateDir, owner(st), fi.Mode().Perm(), svc)))
	}
	if cfg.AdminGroup != "" {
		if _, err := config.LookupGroup(cfg.AdminGroup); err != nil {
			rs = append(rs, fail("", "admin_group", err.Error(), fmt.Sprintf("create the group (groupadd %s) or remove admin_group", cfg.AdminGroup)))
		} else {
			rs = append(rs, pass("", "admin_group", fmt.Sprintf("group %q exists: its members may refresh through the daemon and change the queue", cfg.AdminGroup)))
		}
	}
	return rs
}

// stat is os.Stat with the owner's ids.
func stat(path string) (os.FileInfo, *unix.Stat_t, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return nil, nil, err
	}
	return fi, &st, nil
}

// owner is "user:group" of st, by name when known.
func owner(st *unix.Stat_t) string { return statedir.Owner(st) }

// file is a file an account's configuration names.
type file struct {
	key, path string
	secret    bool
}

func accountFiles(a *config.Account) []file {
	var fs []file
	for _, f := range []file{
		{"client_secret_file", a.ClientSecretFile, true}, {"password_file", a.PasswordFile, true},
		{"client_certificate_file", a.ClientCertificateFile, true}, {"client_key_file", a.ClientKeyFile, true},
		{"service_account_file", a.ServiceAccountFile, true}, {"ca_file", a.CAFile, false},
	} {
		if f.path != "" {
			fs = append(fs, f)
		}
	}
	return fs
}

// Files checks each file account a names (secrets, password, CA bundle,
// certificate and key) as svc, the user relayd runs as: it must exist, be
// readable by svc, be changeable by nobody else, and a secret must not be
// readable by everyone. A CA bundle must hold certificates.
func Files(a *config.Account, svc *User) []Result {
	var rs []Result
	for _, f := range accountFiles(a) {
		rs = append(rs, checkFile(a.Name, f, svc))
	}
	return rs
}

func checkFile(acct string, f file, svc *User) Result {
	check := "file." + f.key
	fi, st, err := stat(f.path)
	if err != nil {
		return fail(acct, check, fmt.Sprintf("%s: %v", f.path, unwrapPath(err)), fmt.Sprintf("put the file there, or correct %s", f.key))
	}
	if !fi.Mode().IsRegular() {
		return fail(acct, check, f.path+" is not a regular file", fmt.Sprintf("point %s at a file", f.key))
	}
	perm := fi.Mode().Perm()
	layout := "root:" + groupName(svc.GIDs[0]) + " 0640"
	if !f.secret {
		layout = "root 0644"
	}
	var problems, fixes []string
	if perm&0o022 != 0 {
		problems = append(problems, fmt.Sprintf("others may change it (mode %04o)", perm))
		fixes = append(fixes, "chmod go-w "+f.path)
	}
	if f.secret && perm&0o004 != 0 {
		problems = append(problems, fmt.Sprintf("it holds a secret but everyone may read it (mode %04o)", perm))
		fixes = append(fixes, "chmod o-r "+f.path)
	}
	if !statedir.Readable(f.path, uint32(svc.UID), svc.GIDs) {
		problems = append(problems, fmt.Sprintf("%s, who runs relayd, cannot read it (owner %s, mode %04o, or a directory above it is closed)", svc, owner(st), perm))
		fixes = append(fixes, fmt.Sprintf("chgrp %s %s && chmod g+r %s, and let that group search the directories above it", groupName(svc.GIDs[0]), f.path, f.path))
	}
	if len(problems) > 0 {
		return fail(acct, check, f.path+": "+strings.Join(problems, "; "), strings.Join(fixes, "; ")+" ("+layout+" is the normal layout)")
	}
	if f.key == "ca_file" {
		if r := checkCAFile(acct, check, f.path); r != nil {
			return *r
		}
	}
	return pass(acct, check, fmt.Sprintf("%s: owner %s, mode %04o, readable by %s", f.path, owner(st), perm, svc))
}

// checkCAFile: the bundle must hold certificates. nil when it does, or
// when this process may not read it (its mode was checked already).
func checkCAFile(acct, check, path string) *Result {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	n := 0
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
				n++
			}
		}
	}
	if n == 0 {
		r := fail(acct, check, path+" holds no PEM certificate", "put the CA certificates that sign the upstream servers' certificates there, PEM-encoded (-----BEGIN CERTIFICATE-----)")
		return &r
	}
	return nil
}

func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
