package proxy

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayd/relayd/config"
	"github.com/relayd/relayd/internal/testkit"
)

// waitWarm waits, without sleeping, until account support has n warm
// connections ready.
func waitWarm(t *testing.T, s *IMAPServer, n int) WarmStatus {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		ch := s.warm.changed()
		if st, _ := s.WarmStatus("support"); st.Ready >= n {
			return st
		}
		select {
		case <-ch:
		case <-timeout:
			st, _ := s.WarmStatus("support")
			t.Fatalf("warm connections = %+v, want %d ready", st, n)
		}
	}
}

var uidValidity = regexp.MustCompile(`UIDVALIDITY \d+`)

// loginTranscript logs in with commands pipelined behind LOGIN and returns
// every line relayd answered, up to LOGOUT's OK or LOGIN's refusal.
func loginTranscript(r *testRelay) []string {
	r.t.Helper()
	rw := r.raw()
	rw.send("a LOGIN " + testUser + " " + testPassword + "\r\nb NOOP\r\nc SELECT INBOX\r\nd LOGOUT\r\n")
	var lines []string
	for {
		l := uidValidity.ReplaceAllString(rw.line(), "UIDVALIDITY n")
		lines = append(lines, l)
		if strings.HasPrefix(l, "d OK") || strings.HasPrefix(l, "a NO") {
			return lines
		}
	}
}

// A login served from the pool behaves exactly as a cold one: the same
// replies to commands pipelined behind LOGIN, the same capabilities, the
// same refresh and retry when the upstream refuses the token, the same
// words when the grant is revoked; only fewer round trips.
func TestWarmLoginSameAsCold(t *testing.T) {
	for _, tc := range []struct {
		name  string
		style testkit.Style
		tls   bool
	}{
		{"google", testkit.Google, false},
		{"exchange-tls", testkit.Exchange, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			run := func(warm int) (out []string, served uint64) {
				r := newTestRelay(t, relayOpts{style: tc.style, tls: tc.tls, warm: warm})
				step := func(what string) {
					if warm > 0 {
						waitWarm(t, r.srv, 1)
					}
					out = append(out, "-- "+what)
					out = append(out, loginTranscript(r)...)
				}
				step("pipelined")
				r.idp.ExpireAccessTokens() // the upstream refuses the token relayd holds
				step("token refused once")
				if n := r.up.Failures.Load(); n != 1 {
					t.Errorf("warm=%d: upstream rejections = %d, want 1", warm, n)
				}
				if warm > 0 {
					waitWarm(t, r.srv, 1)
				}
				r.idp.Revoke(testMailbox)
				out = append(out, "-- revoked")
				out = append(out, loginTranscript(r)...)
				st, _ := r.srv.WarmStatus("support")
				return out, st.Served
			}
			cold, _ := run(0)
			warm, served := run(1)
			if c, w := strings.Join(cold, "\n"), strings.Join(warm, "\n"); c != w {
				t.Errorf("cold login:\n%s\n\nwarm login:\n%s", c, w)
			}
			if served < 3 {
				t.Errorf("%d logins served warm, want at least 3", served)
			}
			if !strings.Contains(strings.Join(cold, "\n"), "c OK [READ-WRITE]") {
				t.Errorf("transcript lacks the SELECT:\n%s", strings.Join(cold, "\n"))
			}
		})
	}
}

// Against the real Dovecot (TLS upstream): the same replies cold and
// warm, Dovecot's post-login capabilities, and its error challenge for a
// revoked grant answered the same way.
func TestDovecotWarmLoginSameAsCold(t *testing.T) {
	_, o := startDovecot(t, config.SecurityTLS)
	r := newTestRelay(t, o) // warm 0: cold logins
	cold := loginTranscript(r)

	_, o = startDovecot(t, config.SecurityTLS)
	o.warm = 1
	rw := newTestRelay(t, o)
	waitWarm(t, rw.srv, 1)
	warm := loginTranscript(rw)
	if st, _ := rw.srv.WarmStatus("support"); st.Served != 1 {
		t.Errorf("warm status %+v, want 1 served", st)
	}
	norm := func(l []string) string {
		// Dovecot's replies carry how long each command took.
		return regexp.MustCompile(`\([0-9.+ ]+ secs\)`).ReplaceAllString(strings.Join(l, "\n"), "(t secs)")
	}
	if c, w := norm(cold), norm(warm); c != w {
		t.Errorf("cold login:\n%s\n\nwarm login:\n%s", c, w)
	}
	if !strings.Contains(norm(warm), "IDLE") || !strings.Contains(norm(warm), "c OK [READ-WRITE]") {
		t.Errorf("warm transcript lacks Dovecot's capabilities or the SELECT:\n%s", norm(warm))
	}
	waitWarm(t, rw.srv, 1)
	rw.idp.Revoke(testMailbox)
	got := loginTranscript(rw)
	want := `a NO [AUTHENTICATIONFAILED] mailbox "support" needs reauthorization: run 'relayd authorize support'`
	if fmt.Sprint(got) != fmt.Sprint([]string{want}) {
		t.Errorf("revoked grant through a warm connection: %q, want %q", got, want)
	}
}

// With warm connections the access token is fetched ahead: the login that
// takes a warm connection does not wait for the token endpoint.
func TestWarmLoginDoesNotWaitForToken(t *testing.T) {
	r := newTestRelay(t, relayOpts{warm: 1})
	waitWarm(t, r.srv, 1)
	if done, _ := r.acct.Tokens.RefreshAhead(time.Minute); done != nil {
		<-done // the pool's refresh, joined
	}
	before := r.idp.Refreshes()
	if before != 1 {
		t.Errorf("%d refreshes before the first login, want 1 (the token fetched ahead)", before)
	}
	r.login()
	if n := r.idp.Refreshes(); n != before {
		t.Errorf("the login refreshed the token (%d refreshes, want %d)", n, before)
	}
}

// POP3: an account's pool starts at its first POP3 login; the next login
// takes a warm connection and answers as the cold one did.
func TestWarmPOP3LoginSameAsCold(t *testing.T) {
	r := newPOP3Relay(t, pop3Opts{style: testkit.Exchange, tls: true})
	transcript := func() string {
		rw := r.raw()
		rw.send("USER " + testUser + "\r\nPASS " + testPassword + "\r\nSTAT\r\nLIST\r\nQUIT\r\n")
		l := []string{rw.line(), rw.line(), rw.line(), rw.line()}
		l = append(l, rw.multi()...)
		return strings.Join(append(l, rw.line()), "\n")
	}
	if _, ok := r.srv.WarmStatus("support"); ok {
		t.Fatal("a POP3 pool before the account's first POP3 login")
	}
	cold := transcript()
	timeout := time.After(20 * time.Second)
	for {
		ch := r.srv.warm.changed()
		if st, _ := r.srv.WarmStatus("support"); st.Ready == 1 {
			break
		}
		select {
		case <-ch:
		case <-timeout:
			t.Fatal("no warm POP3 connection after the first login")
		}
	}
	warm := transcript()
	if cold != warm {
		t.Errorf("cold login:\n%s\n\nwarm login:\n%s", cold, warm)
	}
	if st, _ := r.srv.WarmStatus("support"); st.Served != 1 {
		t.Errorf("POP3 warm status %+v, want the second login served warm", st)
	}
	if !strings.Contains(warm, "+OK User successfully authenticated.") {
		t.Errorf("transcript:\n%s", warm)
	}
}
