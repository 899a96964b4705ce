package config

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"syscall"
)

// CheckKeyFile judges key_file for check-config, as svc (nil: this
// process) would read it. No key file where none was asked for is a
// warning: grants are then stored unencrypted. A key_file set but
// missing, one svc cannot read, one others may read or anyone but root
// may write, or one that holds no key, is an error: relayd would start,
// but its encrypted grants would be grant_undecryptable.
func (c *Config) CheckKeyFile(svc *ServiceUser) (warning string, err error) {
	fi, serr := os.Stat(c.KeyFile)
	switch {
	case errors.Is(serr, fs.ErrNotExist) && !c.KeyFileSet:
		return fmt.Sprintf("key_file %s does not exist: grants are stored unencrypted; run 'relayd rotate-key' to create the key and encrypt them (or give the service the systemd credential %s)", c.KeyFile, "relayd.key"), nil
	case errors.Is(serr, fs.ErrNotExist):
		return "", &Error{Key: "key_file", Msg: fmt.Sprintf("%s does not exist: encrypted grants cannot be read, and no grant can be stored; restore it from its backup, or run 'relayd rotate-key' if no grant was ever encrypted", c.KeyFile), Err: fs.ErrNotExist}
	case serr != nil:
		return "", &Error{Key: "key_file", Msg: serr.Error(), Err: serr}
	}
	st, _ := fi.Sys().(*syscall.Stat_t)
	if m := fi.Mode().Perm(); m&0o007 != 0 || m&0o020 != 0 || st != nil && st.Uid != 0 && (svc == nil || int(st.Uid) != svc.UID) {
		return "", &Error{Key: "key_file", Msg: fmt.Sprintf("%s has mode %04o: anyone who reads it decrypts the grants; make it root:relayd 0640 (chown root:relayd %s && chmod 0640 %s)", c.KeyFile, m, c.KeyFile, c.KeyFile)}
	}
	if svc != nil {
		if err := checkReadableBy("key_file", c.KeyFile, svc); err != nil {
			return "", err
		}
	}
	b, rerr := os.ReadFile(c.KeyFile)
	if rerr != nil {
		return "", nil // another user's view: judged by the modes above
	}
	if raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b))); err != nil || len(raw) != 32 {
		return "", &Error{Key: "key_file", Msg: fmt.Sprintf("%s holds no relayd key: want 32 random bytes, base64, on one line ('relayd rotate-key' writes one)", c.KeyFile)}
	}
	return "", nil
}
