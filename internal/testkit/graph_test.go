package testkit_test

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/relayd/relayd/internal/testkit"
)

// tokenRequest posts form to the IdP's token endpoint and returns the
// answer's status and body.
func tokenRequest(t *testing.T, u string, form url.Values) (int, map[string]any) {
	t.Helper()
	resp, err := http.PostForm(u, form)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

// Like Entra, one token request gets a token for one resource: scopes of
// the mail protocols and Graph together answer AADSTS28000 at the token
// step, after /devicecode accepted them; each alone works, and a Graph
// token is a JWT that names its audience and scp.
func TestIdPOneResourcePerToken(t *testing.T) {
	idp := testkit.StartIdP(t)
	graph := testkit.StartGraph(t, idp)
	mixed := "https://outlook.example/IMAP.AccessAsUser.All " + graph.Scope() + " offline_access"

	rt := idp.IssueRefreshToken("client", "a@example.com")
	status, body := tokenRequest(t, idp.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "client_id": {"client"},
		"refresh_token": {rt}, "scope": {mixed}})
	if status != 400 || !strings.HasPrefix(body["error_description"].(string), "AADSTS28000") {
		t.Errorf("refresh for two resources = %d %v, want 400 AADSTS28000", status, body)
	}
	status, body = tokenRequest(t, idp.TokenURL(), url.Values{"grant_type": {"refresh_token"}, "client_id": {"client"},
		"refresh_token": {rt}, "scope": {graph.Scope() + " offline_access"}})
	at, _ := body["access_token"].(string)
	if status != 200 || strings.Count(at, ".") != 2 || idp.ValidateGraph(at, graph.URL) == nil {
		t.Fatalf("refresh for Graph = %d %v", status, body)
	}

	status, body = tokenRequest(t, idp.DeviceAuthURL(), url.Values{"client_id": {"client"}, "scope": {mixed}})
	if status != 200 {
		t.Fatalf("/devicecode with two resources = %d %v; Entra accepts them there", status, body)
	}
	if err := idp.ApproveDevice(body["user_code"].(string), "a@example.com"); err != nil {
		t.Fatal(err)
	}
	status, body = tokenRequest(t, idp.TokenURL(), url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:device_code"},
		"client_id": {"client"}, "device_code": {body["device_code"].(string)}})
	if status != 400 || !strings.HasPrefix(body["error_description"].(string), "AADSTS28000") {
		t.Errorf("device token step for two resources = %d %v, want 400 AADSTS28000", status, body)
	}
}
