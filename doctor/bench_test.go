package doctor_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/doctor"
	"github.com/relayd/relayd/internal/relaytest"
	"github.com/relayd/relayd/internal/testkit"
	"github.com/relayd/relayd/registry"
)

// BenchmarkDoctor10Accounts is relayd doctor's whole run (doctor.Run: the
// configuration's checks and every check of 10 accounts, concurrently)
// against local fakes: an IMAP upstream with implicit TLS and an SMTP
// upstream with STARTTLS, both checked against ca_file, and the fake
// IdP's token endpoint; each account's grant refreshed and both logins
// made. The target is under 5 s per run (issue 17).
//
//	go test -run '^$' -bench Doctor10Accounts -benchtime 20x ./doctor/
func BenchmarkDoctor10Accounts(b *testing.B) {
	e := relaytest.New(b)
	imap := e.IMAPUpstream(testkit.IMAPOptions{Style: testkit.Exchange, TLS: true})
	smtp := e.SMTPUpstream(testkit.SMTPOptions{Style: testkit.Exchange, STARTTLS: true})
	ca := filepath.Join(e.Dir, "ca.pem")
	os.WriteFile(ca, append(append([]byte(nil), imap.CertPEM...), smtp.CertPEM...), 0o644)
	cfg := &config.Config{StateDir: filepath.Join(e.Dir, "state")}
	path := filepath.Join(e.Dir, "relayd.toml")
	os.WriteFile(path, nil, 0o600)
	accts := map[string]*registry.Account{}
	for i := range 10 {
		name, mbox := fmt.Sprintf("box%d", i), fmt.Sprintf("box%d@example.com", i)
		imap.AddUser(mbox)
		a := e.Account(testkit.Account{Name: name, Email: mbox, IMAPServer: imap.Addr, SMTPServer: smtp.Addr, Security: "tls", Direction: "both"},
			relaytest.AccountOptions{Edit: func(a *config.Account) { a.CAFile, a.SMTPSecurity = ca, config.SecuritySTARTTLS }})
		accts[name] = a
		cfg.Accounts = append(cfg.Accounts, a.Config)
	}
	creds := func(ctx context.Context, a *config.Account) []doctor.Result {
		return doctor.Credentials(ctx, accts[a.Name].Account, doctor.Options{})
	}
	o := doctor.Options{ServiceUser: &doctor.User{Name: "root", GIDs: []int{0}}}
	for b.Loop() {
		rs := doctor.Run(context.Background(), cfg, path, nil, creds, o)
		for _, r := range rs {
			if r.Failed() {
				b.Fatalf("%s %s: %s", r.Account, r.Check, r.Detail)
			}
		}
	}
}
