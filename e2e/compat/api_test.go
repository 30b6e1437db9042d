package compat

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
)

// TestVersionSystem checks GET /version and GET /system as the plugin (and
// Helm probes) read them.
func TestVersionSystem(t *testing.T) {
	env := getEnv(t)

	c, err := service.NewClient(service.ClientConfig{URL: env.url})
	if err != nil {
		t.Fatal(err)
	}
	info, err := c.GetVersionInfo()
	if err != nil {
		t.Fatalf("GetVersionInfo: %v", err)
	}
	if info.BuildVersion == "" {
		t.Errorf("buildVersion is empty: %+v", info)
	}
	if _, err := c.GetSystemInfo(); err != nil {
		t.Fatalf("GetSystemInfo: %v", err)
	}

	code, hdr, body := env.rawRequest(t, http.MethodGet, "/version", nil, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /version = %d", code)
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("GET /version Content-Type = %q, want application/json", ct)
	}
	var v map[string]any
	mustJSON(t, body, &v)
	if got := strings.Join(keysOf(v), ","); got != "buildDate,buildHash,buildVersion,goArch,goOS,goVersion" {
		t.Errorf("GET /version keys = %s", got)
	}
	for k, val := range v {
		if _, ok := val.(string); !ok {
			t.Errorf("GET /version %s = %v (%T), want a string", k, val, val)
		}
	}
	t.Logf("GET /version: %s", strings.TrimSpace(string(body)))

	code, _, body = env.rawRequest(t, http.MethodGet, "/system", nil, "", "")
	if code != http.StatusOK {
		t.Fatalf("GET /system = %d", code)
	}
	var s map[string]any
	mustJSON(t, body, &s)
	if _, ok := s["cpu_load"].(float64); !ok || len(s) != 1 {
		t.Errorf("GET /system = %s, want {\"cpu_load\":<number>}", body)
	}

	// Each handler checks its own method; a wrong one is a plain 404.
	for _, r := range []struct{ method, path string }{
		{http.MethodPost, "/version"},
		{http.MethodGet, "/register"},
		{http.MethodGet, "/login"},
	} {
		if code, _, _ := env.rawRequest(t, r.method, r.path, nil, "", ""); code != http.StatusNotFound {
			t.Errorf("%s %s = %d, want 404", r.method, r.path, code)
		}
	}
}

// TestRegisterErrors: what service.Client.Register (the plugin's
// registration path) sees for good and bad requests.
func TestRegisterErrors(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	admin := env.adminClient(t)

	// Too short an authKey (31 chars; rtcd needs >= 32).
	if err := admin.Register(newID(), newAuthKey()[:31]); err == nil {
		t.Errorf("Register with a 31-char authKey succeeded, want an error")
	} else {
		t.Logf("short authKey: %v", err)
	}
	code, _, body := env.rawRequest(t, http.MethodPost, "/register",
		strings.NewReader(fmt.Sprintf(`{"clientID":%q,"authKey":"short"}`, newID())), "admin", env.adminKey)
	checkJSONError(t, "short authKey", code, body, http.StatusBadRequest)

	// Malformed JSON.
	code, _, body = env.rawRequest(t, http.MethodPost, "/register", strings.NewReader("{"), "admin", env.adminKey)
	checkJSONError(t, "bad JSON", code, body, http.StatusBadRequest)

	// Success reply shape, then a duplicate.
	clientID, authKey := newID(), newAuthKey()
	code, _, body = env.rawRequest(t, http.MethodPost, "/register",
		strings.NewReader(fmt.Sprintf(`{"clientID":%q,"authKey":%q}`, clientID, authKey)), "admin", env.adminKey)
	if code != http.StatusCreated {
		t.Fatalf("POST /register = %d %s, want 201", code, body)
	}
	var ok map[string]any
	mustJSON(t, body, &ok)
	if ok["clientID"] != clientID || ok["code"] != "201" || len(ok) != 2 {
		t.Errorf(`POST /register reply %s, want {"clientID":%q,"code":"201"}`, body, clientID)
	}
	t.Cleanup(func() { _ = admin.Unregister(clientID) })
	if err := admin.Register(clientID, newAuthKey()); err == nil {
		t.Errorf("registering an existing clientID succeeded, want an error")
	}
	code, _, body = env.rawRequest(t, http.MethodPost, "/register",
		strings.NewReader(fmt.Sprintf(`{"clientID":%q,"authKey":%q}`, clientID, authKey)), "admin", env.adminKey)
	checkJSONError(t, "duplicate clientID", code, body, http.StatusBadRequest)
}

// checkJSONError checks rtcd's JSON error reply: {"code":"<status>","error":"..."}
// with code as a string.
func checkJSONError(t *testing.T, what string, code int, body []byte, want int) {
	t.Helper()
	if code != want {
		t.Errorf("%s: status %d (%s), want %d", what, code, body, want)
		return
	}
	var m map[string]any
	if err := json.Unmarshal(body, &m); err != nil {
		t.Errorf("%s: body %q is not JSON: %v", what, body, err)
		return
	}
	if m["code"] != fmt.Sprint(want) {
		t.Errorf("%s: body %s: want \"code\" to be the string %q", what, body, fmt.Sprint(want))
	}
	if e, _ := m["error"].(string); e == "" {
		t.Errorf("%s: body %s: want a non-empty \"error\"", what, body)
	}
}

// TestWSAuthFailures: a WS connect with bad credentials must fail the way
// the plugin's service.Client sees it (no upgrade, "bad handshake").
func TestWSAuthFailures(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	_, clientID, authKey := env.registerClient(t)

	cases := []struct{ name, id, key string }{
		{"wrong authKey", clientID, newAuthKey()},
		{"unknown clientID", newID(), authKey},
		{"empty clientID", "", authKey},
	}
	for _, tc := range cases {
		c, err := service.NewClient(service.ClientConfig{ClientID: tc.id, AuthKey: tc.key, URL: env.url})
		if err != nil {
			t.Fatal(err)
		}
		err = c.Connect()
		if err == nil {
			_ = c.Close()
			t.Errorf("%s: Connect succeeded, want an error", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), "bad handshake") {
			t.Errorf("%s: Connect error %q, want a failed (non-101) handshake", tc.name, err)
		}
	}

	// Raw upgrade requests, to see exactly what the server answers.
	for _, tc := range []struct{ name, auth string }{
		{"no Authorization", ""},
		{"wrong Basic", "Basic " + base64.StdEncoding.EncodeToString([]byte(clientID+":"+newAuthKey()))},
		{"unknown Bearer", "Bearer " + newAuthKey()},
	} {
		status, body := rawUpgrade(t, env.url, tc.auth)
		if status == http.StatusSwitchingProtocols {
			t.Errorf("%s: server upgraded the connection", tc.name)
		}
		t.Logf("%s: /ws upgrade answered %d with %d body bytes %q", tc.name, status, len(body), body)
	}

	// The right credentials upgrade (101).
	status, _ := rawUpgrade(t, env.url, "Basic "+base64.StdEncoding.EncodeToString([]byte(clientID+":"+authKey)))
	if status != http.StatusSwitchingProtocols {
		t.Errorf("good Basic: /ws upgrade answered %d, want 101", status)
	}
}

// rawUpgrade sends a WebSocket upgrade request to /ws and returns the status
// and the first bytes of the body.
func rawUpgrade(t *testing.T, base, auth string) (int, string) {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.DialTimeout("tcp", u.Host, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", u.Host, err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET /ws HTTP/1.1\r\nHost: " + u.Host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
	if auth != "" {
		req += "Authorization: " + auth + "\r\n"
	}
	req += "\r\n"
	if _, err := conn.Write([]byte(req)); err != nil {
		t.Fatalf("write upgrade: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read upgrade response: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return resp.StatusCode, ""
	}
	buf := make([]byte, 256)
	n, _ := resp.Body.Read(buf)
	return resp.StatusCode, string(buf[:n])
}

// TestSessionsAuth: GET /calls/{callID}/sessions as the plugin calls it at
// activation (hasCallEnded).
func TestSessionsAuth(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	c, clientID, authKey := env.registerClient(t)

	_, code, err := c.GetSessions(newID())
	if code != http.StatusNotFound || err == nil {
		t.Errorf("GetSessions(unknown call) = %d, %v; want 404", code, err)
	}

	bad, _ := service.NewClient(service.ClientConfig{ClientID: clientID, AuthKey: newAuthKey(), URL: env.url})
	if _, code, _ := bad.GetSessions(newID()); code != http.StatusUnauthorized {
		t.Errorf("GetSessions with a wrong authKey = %d, want 401", code)
	}
	// The admin has no clientID, so it cannot read sessions.
	if _, code, _ := env.adminClient(t).GetSessions(newID()); code != http.StatusUnauthorized {
		t.Errorf("GetSessions as admin = %d, want 401", code)
	}
	code, _, body := env.rawRequest(t, http.MethodGet, "/calls/"+newID()+"/sessions", nil, clientID, newAuthKey())
	if code != http.StatusUnauthorized || strings.TrimSpace(string(body)) != "unauthorized" {
		t.Errorf("raw GET sessions with bad auth = %d %q, want 401 \"unauthorized\"", code, body)
	}
	code, _, _ = env.rawRequest(t, http.MethodGet, "/calls/"+newID()+"/sessions", nil, clientID, authKey)
	if code != http.StatusNotFound {
		t.Errorf("raw GET sessions of unknown call = %d, want 404", code)
	}
}

// TestUnregister: a client can unregister itself (200), not another client
// (403), and cannot connect afterwards.
func TestUnregister(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	c1, id1, _ := env.registerClient(t)
	_, id2, _ := env.registerClient(t)

	if err := c1.Unregister(id2); err == nil {
		t.Errorf("client 1 unregistered client 2, want an error (403)")
	}
	if err := c1.Unregister(id1); err != nil {
		t.Fatalf("self Unregister: %v", err)
	}
	if err := c1.Connect(); err == nil {
		_ = c1.Close()
		t.Errorf("Connect after Unregister succeeded, want an error")
	}
}

// TestSessions404Bodies: the sessions API's 404 bodies, word for word, as the
// plugin (hasCallEnded) and an admin with curl read them: before the client's
// first call and after its last one rtcd has no group for it; while another
// call of the client lives, an unknown call is "call not found".
func TestSessions404Bodies(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	h := newHarness(t, env)
	h.waitHello(t)
	get := func(path string) (int, string) {
		code, _, body := env.rawRequest(t, http.MethodGet, path, nil, h.clientID, h.authKey)
		return code, strings.TrimSpace(string(body))
	}
	want := func(path, body string) {
		t.Helper()
		code, got := get(path)
		if code != http.StatusNotFound || got != body {
			t.Errorf("GET %s = %d %q, want 404 %q", path, code, got, body)
		}
	}
	callA, callB, sid := newID(), newID(), newID()
	want("/calls/"+callA+"/sessions", "failed to get session configs: group not found")
	want("/calls/"+callA+"/sessions/"+sid, "failed to get session config: group not found")

	h.send(t, service.ClientMessageJoin, map[string]any{
		"callID": callA, "userID": newID(), "sessionID": sid, "channelID": newID(),
		"av1Support": false, "dcSignaling": false,
	})
	waitFor(t, "the session in the sessions API", 5*time.Second, func() bool {
		code, _ := get("/calls/" + callA + "/sessions")
		return code == http.StatusOK
	})
	want("/calls/"+callB+"/sessions", "failed to get session configs: call not found")
	want("/calls/"+callB+"/sessions/"+sid, "failed to get session config: call not found")
	want("/calls/"+callA+"/sessions/"+newID(), "failed to get session config: session not found")

	h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": sid})
	h.waitClose(t, sid, 5*time.Second)
	waitFor(t, "the call to end", 5*time.Second, func() bool {
		code, _ := get("/calls/" + callA + "/sessions")
		return code == http.StatusNotFound
	})
	want("/calls/"+callA+"/sessions", "failed to get session configs: group not found")
	h.checkErrors(t)
}
