package provider

import "testing"

func TestKnownIsConsistent(t *testing.T) {
	if len(Names) != len(Known) {
		t.Fatalf("Names has %d providers, Known %d", len(Names), len(Known))
	}
	for _, name := range Names {
		p, ok := Lookup(name)
		if !ok {
			t.Fatalf("%s is in Names but not in Known", name)
		}
		if p.Name != name {
			t.Errorf("Known[%q].Name = %q", name, p.Name)
		}
		if p.OAuth && len(p.Grants) == 0 {
			t.Errorf("%s: an OAuth provider without grants", name)
		}
		if p.IMAPSecurity == "" || p.SMTPSecurity == "" {
			t.Errorf("%s: no default connection security", name)
		}
	}
	if Known["gmail"].AllowsGrant(GrantClientCredentials) {
		t.Error("gmail allows client_credentials")
	}
}

func TestLookupAADSTS(t *testing.T) {
	body := `{"error":"invalid_client","error_description":"AADSTS7000222: The provided client secret keys for app 'x' are expired.","error_codes":[7000222]}`
	code, m, ok := LookupAADSTS(body)
	if !ok || code != 7000222 || m.Reason != "client_secret_expired" || m.Fix != FixAdmin {
		t.Errorf("LookupAADSTS = %d %+v %v", code, m, ok)
	}
	// 70008 must not be found inside 700082.
	code, m, ok = LookupAADSTS(`AADSTS700082: expired due to inactivity`)
	if !ok || code != 700082 || m.Reason != "grant_expired_idle" {
		t.Errorf("LookupAADSTS(700082) = %d %+v %v", code, m, ok)
	}
}

func TestSMTPReplies(t *testing.T) {
	if !SMTPAuthDisabled(535, [3]int{5, 7, 139}, "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.") {
		t.Error("535 5.7.139 not recognised")
	}
	if SMTPAuthDisabled(535, [3]int{5, 7, 3}, "Authentication unsuccessful") {
		t.Error("535 5.7.3 taken for SMTP AUTH disabled")
	}
	if !SMTPThrottle(554, [3]int{5, 2, 0}, "STOREDRV.Submission.Exception:SubmissionQuotaExceededException") ||
		!SMTPThrottle(550, [3]int{5, 4, 5}, "Daily user sending limit exceeded") {
		t.Error("throttle not recognised")
	}
	if SMTPThrottle(550, [3]int{5, 1, 1}, "User unknown") {
		t.Error("550 5.1.1 taken for a throttle")
	}
}
