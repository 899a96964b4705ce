package testkit_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-imap/v2/imapclient"
	"github.com/emersion/go-sasl"
	"golang.org/x/oauth2"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/realserver"
	"github.com/relayd/relayd/internal/testkit"
)

const mailbox = "user@example.com"

func setup(t *testing.T, opts testkit.IMAPOptions) (*testkit.IdP, *testkit.IMAPUpstream) {
	t.Helper()
	idp, err := testkit.NewIdP()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { idp.Close() })
	up, err := testkit.NewIMAPUpstream(idp, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	up.AddUser(mailbox)
	return idp, up
}

type conn struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dial(t *testing.T, addr string) *conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	cn := &conn{t: t, c: c, br: bufio.NewReader(c)}
	cn.line() // greeting
	return cn
}

func (c *conn) send(s string) {
	c.t.Helper()
	if _, err := c.c.Write([]byte(s + "\r\n")); err != nil {
		c.t.Fatal(err)
	}
}

func (c *conn) line() string {
	c.t.Helper()
	l, err := c.br.ReadString('\n')
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return strings.TrimRight(l, "\r\n")
}

// upstreams returns the fake in Google style and, when installed, a real
// Dovecot with the oauth2 passdb: the fake must answer as Dovecot does.
func googleStyleUpstreams(t *testing.T) map[string]func(t *testing.T) (*testkit.IdP, string) {
	return map[string]func(t *testing.T) (*testkit.IdP, string){
		"fake": func(t *testing.T) (*testkit.IdP, string) {
			idp, up := setup(t, testkit.IMAPOptions{Style: testkit.Google})
			return idp, up.Addr
		},
		"dovecot": func(t *testing.T) (*testkit.IdP, string) {
			idp, err := testkit.NewIdP()
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { idp.Close() })
			d := realserver.StartDovecot(t, idp, realserver.DovecotOptions{})
			return idp, d.IMAPAddr
		},
	}
}

// A bad token gets a challenge with a base64 JSON error; the client answers
// with an empty line and then gets NO.
func TestGoogleStyleErrorChallenge(t *testing.T) {
	for name, start := range googleStyleUpstreams(t) {
		t.Run(name, func(t *testing.T) {
			_, addr := start(t)
			c := dial(t, addr)
			c.send("a AUTHENTICATE XOAUTH2 " + testkit.EncodeXOAUTH2(mailbox, "bogus-token"))
			ch := c.line()
			b64, ok := strings.CutPrefix(ch, "+ ")
			if !ok {
				t.Fatalf("reply to a bad token = %q, want a challenge", ch)
			}
			raw, err := base64.StdEncoding.DecodeString(b64)
			var js map[string]any
			if err != nil || json.Unmarshal(raw, &js) != nil || js["status"] == nil {
				t.Fatalf("challenge %q is not base64 JSON with a status", raw)
			}
			c.send("")
			if got := c.line(); !strings.HasPrefix(got, "a NO [AUTHENTICATIONFAILED]") {
				t.Errorf("final reply = %q, want a NO [AUTHENTICATIONFAILED]", got)
			}
		})
	}
}

// SASL-IR and the continuation form both log in with a good token.
func TestXOAUTH2Forms(t *testing.T) {
	for name, start := range googleStyleUpstreams(t) {
		t.Run(name, func(t *testing.T) {
			idp, addr := start(t)
			tok := idp.IssueAccessToken(mailbox, time.Hour)
			c := dial(t, addr)
			c.send("a AUTHENTICATE XOAUTH2 " + testkit.EncodeXOAUTH2(mailbox, tok))
			if got := c.line(); !strings.HasPrefix(got, "a OK") {
				t.Errorf("SASL-IR form: %q", got)
			}
			c = dial(t, addr)
			c.send("b AUTHENTICATE XOAUTH2")
			if got := c.line(); !strings.HasPrefix(got, "+") {
				t.Fatalf("continuation form: %q, want +", got)
			}
			c.send(testkit.EncodeXOAUTH2(mailbox, tok))
			if got := c.line(); !strings.HasPrefix(got, "b OK") {
				t.Errorf("continuation form: %q", got)
			}
		})
	}
}

func TestExchangeStyleBareNO(t *testing.T) {
	_, up := setup(t, testkit.IMAPOptions{Style: testkit.Exchange})
	c := dial(t, up.Addr)
	c.send("a AUTHENTICATE XOAUTH2 " + testkit.EncodeXOAUTH2(mailbox, "bogus"))
	if got := c.line(); got != "a NO AUTHENTICATE failed." {
		t.Errorf("reply = %q, want Exchange's bare NO", got)
	}
}

func TestNoSASLIRHidesCapability(t *testing.T) {
	_, up := setup(t, testkit.IMAPOptions{NoSASLIR: true})
	c, err := net.Dial("tcp", up.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	g, _ := bufio.NewReader(c).ReadString('\n')
	if strings.Contains(g, "SASL-IR") || !strings.Contains(g, "AUTH=XOAUTH2") {
		t.Errorf("greeting = %q", g)
	}
}

// relayd's XOAUTH2 client logs in with imapclient, and its failure is a
// failure, in both styles.
func TestXOAUTH2ClientAgainstFakes(t *testing.T) {
	for _, style := range []testkit.Style{testkit.Google, testkit.Exchange} {
		idp, up := setup(t, testkit.IMAPOptions{Style: style})
		c, err := imapclient.DialInsecure(up.Addr, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Authenticate(auth.NewXOAUTH2Client(mailbox, "bogus")); err == nil {
			t.Errorf("style %d: Authenticate(bad token) = nil, want an error", style)
		}
		// The connection is still in step: a good token works next.
		if err := c.Authenticate(auth.NewXOAUTH2Client(mailbox, idp.IssueAccessToken(mailbox, time.Hour))); err != nil {
			t.Errorf("style %d: Authenticate(good token) after a failure = %v", style, err)
		}
		c.Close()
	}
}

// wrongClient answers the error challenge with something other than an
// empty response.
type wrongClient struct{ sasl.Client }

func (w wrongClient) Next([]byte) ([]byte, error) { return []byte("retry please"), nil }

// A client that answers the error challenge wrongly does not get logged in.
func TestWrongChallengeAnswerFails(t *testing.T) {
	_, up := setup(t, testkit.IMAPOptions{Style: testkit.Google})
	c, err := imapclient.DialInsecure(up.Addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Authenticate(wrongClient{auth.NewXOAUTH2Client(mailbox, "bogus")})
	if err == nil {
		t.Fatal("Authenticate with a wrong challenge answer = nil, want an error")
	}
	if n := up.Logins.Load(); n != 0 {
		t.Errorf("logins = %d, want 0", n)
	}
}

func TestIdPRotationAndErrors(t *testing.T) {
	idp, err := testkit.NewIdP()
	if err != nil {
		t.Fatal(err)
	}
	defer idp.Close()
	idp.AddClient("c", "")
	cfg := oauth2.Config{ClientID: "c", Endpoint: oauth2.Endpoint{TokenURL: idp.TokenURL(), AuthStyle: oauth2.AuthStyleInParams}}
	rt := idp.IssueRefreshToken("c", mailbox)
	refresh := func(rt string) (*oauth2.Token, error) {
		return cfg.TokenSource(context.Background(), &oauth2.Token{RefreshToken: rt}).Token()
	}
	tok, err := refresh(rt)
	if err != nil || tok.RefreshToken == "" || tok.RefreshToken == rt || tok.Expiry.IsZero() {
		t.Fatalf("refresh = %+v, %v; want a rotated refresh token", tok, err)
	}
	_, err = refresh(rt) // the old one died with the rotation
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) || re.ErrorCode != "invalid_grant" || !strings.Contains(string(re.Body), "AADSTS70008") {
		t.Errorf("reusing a rotated refresh token = %v, want invalid_grant AADSTS70008", err)
	}
	if !idp.Validate(tok.AccessToken, mailbox) || idp.Validate(tok.AccessToken, "other@example.com") {
		t.Error("Validate does not bind the token to its mailbox")
	}
	// RFC 7662 introspection, as Dovecot calls it.
	resp, err := http.PostForm(idp.IntrospectURL(), url.Values{"token": {tok.AccessToken}})
	if err != nil {
		t.Fatal(err)
	}
	var intro map[string]any
	json.NewDecoder(resp.Body).Decode(&intro)
	resp.Body.Close()
	if intro["active"] != true || intro["email"] != mailbox {
		t.Errorf("introspection = %v", intro)
	}
	idp.Revoke(mailbox)
	if idp.Validate(tok.AccessToken, mailbox) {
		t.Error("access token valid after revocation")
	}
	if _, err := refresh(tok.RefreshToken); !errors.As(err, &re) || re.ErrorCode != "invalid_grant" {
		t.Errorf("refresh after revocation = %v", err)
	}
}
