package daemon

import (
	"context"
	"fmt"

	"github.com/relayd/relayd/doctor"
	"github.com/relayd/relayd/status"
)

// Doctor implements status.DoctorBackend: it runs relayd doctor's checks
// of account name that need its tokens with the running account's own
// token source, so that the refresh is this daemon's (a rotated refresh
// token is stored and used at once) and the logins use what the listeners
// and the queue use. The logins' outcomes do not change the account's
// condition; see doctor.Credentials.
func (d *Daemon) Doctor(ctx context.Context, name string, req status.DoctorRequest) ([]doctor.Result, error) {
	acct := d.accounts.Get(name)
	if acct == nil {
		return nil, fmt.Errorf("%w %q: the running daemon does not have it (run 'relayd reload' after editing the configuration)", status.ErrUnknownAccount, name)
	}
	return doctor.Credentials(ctx, acct.Account, req.Options()), nil
}
