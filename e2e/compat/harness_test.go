package compat

import (
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc"
)

// Bounds for every wait in the tests (go test -timeout in run.sh is 180 s).
const (
	helloTimeout   = 5 * time.Second
	connectTimeout = 10 * time.Second
	mediaTimeout   = 10 * time.Second
	closeTimeout   = 10 * time.Second
)

const idAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// newID returns a random 26-char id shaped like a Mattermost id.
func newID() string { return randString(26, idAlphabet) }

func randString(n int, alphabet string) string {
	var sb strings.Builder
	max := big.NewInt(int64(len(alphabet)))
	for i := 0; i < n; i++ {
		v, err := rand.Int(rand.Reader, max)
		if err != nil {
			panic(err)
		}
		sb.WriteByte(alphabet[v.Int64()])
	}
	return sb.String()
}

func newAuthKey() string {
	return randString(40, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
}

type testEnv struct {
	url      string
	adminKey string
	skip     map[string]bool
	// label names the server under test (run.sh's label: rtcd-ref, rtcd-rs, ...).
	label string
	// serverLog is the server's console log (DEBUG), when run.sh gives it.
	serverLog string
}

// ours reports whether the server under test is rtcd-rs (not the reference).
func (e testEnv) ours() bool { return strings.HasPrefix(e.label, "rtcd-rs") }

func getEnv(t *testing.T) testEnv {
	t.Helper()
	u := os.Getenv("RTCD_URL")
	if u == "" {
		t.Skip("RTCD_URL is not set; run e2e/compat/run.sh <server-binary> <label>")
	}
	e := testEnv{
		url: strings.TrimRight(u, "/"), adminKey: os.Getenv("RTCD_ADMIN_KEY"), skip: map[string]bool{},
		label: os.Getenv("COMPAT_LABEL"), serverLog: os.Getenv("COMPAT_SERVER_LOG"),
	}
	for _, s := range strings.Split(os.Getenv("COMPAT_SKIP"), ",") {
		if s = strings.TrimSpace(s); s != "" {
			e.skip[s] = true
		}
	}
	return e
}

func (e testEnv) requireAdmin(t *testing.T) {
	t.Helper()
	if e.adminKey == "" {
		t.Fatal("RTCD_ADMIN_KEY is not set")
	}
}

// adminClient returns a service.Client that authenticates with the admin key
// (Basic auth; rtcd ignores the username when the password is the admin key).
func (e testEnv) adminClient(t *testing.T) *service.Client {
	t.Helper()
	e.requireAdmin(t)
	c, err := service.NewClient(service.ClientConfig{ClientID: "admin", AuthKey: e.adminKey, URL: e.url})
	if err != nil {
		t.Fatalf("service.NewClient(admin): %v", err)
	}
	return c
}

// registerClient registers a fresh clientID/authKey through the admin key,
// like service.Client.Register does for the plugin, and returns a client
// configured with the new credentials (not connected yet).
func (e testEnv) registerClient(t *testing.T) (*service.Client, string, string) {
	t.Helper()
	clientID, authKey := newID(), newAuthKey()
	if err := e.adminClient(t).Register(clientID, authKey); err != nil {
		t.Fatalf("Register(%s) through admin Basic auth failed: %v", clientID, err)
	}
	c, err := service.NewClient(service.ClientConfig{ClientID: clientID, AuthKey: authKey, URL: e.url})
	if err != nil {
		t.Fatalf("service.NewClient: %v", err)
	}
	t.Cleanup(func() {
		// Best effort; leaves the shared server clean for the next test.
		if err := c.Unregister(clientID); err != nil {
			t.Logf("cleanup: Unregister(%s): %v", clientID, err)
		}
	})
	return c, clientID, authKey
}

// rawRequest performs a plain HTTP request against the server and returns
// status, headers and body. Used where service.Client would hide the exact
// wire shape (JSON keys, status codes).
func (e testEnv) rawRequest(t *testing.T, method, path string, body io.Reader, user, pass string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, e.url+path, body)
	if err != nil {
		t.Fatalf("building %s %s: %v", method, path, err)
	}
	if user != "" || pass != "" {
		req.SetBasicAuth(user, pass)
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return resp.StatusCode, resp.Header, data
}

// harness wraps one connected plugin-side service.Client and routes what the
// server sends: rtc messages to the peer owning the session_id, and hello,
// close and vad messages to channels the test can wait on.
type harness struct {
	t        *testing.T
	env      testEnv
	client   *service.Client
	clientID string
	authKey  string

	helloCh chan map[string]string
	closeCh chan map[string]string
	vadCh   chan rtc.Message

	mu      sync.Mutex
	peers   map[string]*peer
	errs    []string
	unknown int
	done    chan struct{}
}

func newHarness(t *testing.T, env testEnv) *harness {
	t.Helper()
	c, clientID, authKey := env.registerClient(t)
	return connectHarness(t, env, c, clientID, authKey)
}

// connectHarness connects c (configured with clientID/authKey, already
// registered) and starts routing what the server sends.
func connectHarness(t *testing.T, env testEnv, c *service.Client, clientID, authKey string) *harness {
	t.Helper()
	h := &harness{
		t:        t,
		env:      env,
		client:   c,
		clientID: clientID,
		authKey:  authKey,
		helloCh:  make(chan map[string]string, 4),
		closeCh:  make(chan map[string]string, 16),
		vadCh:    make(chan rtc.Message, 256),
		peers:    map[string]*peer{},
		done:     make(chan struct{}),
	}
	if err := c.Connect(); err != nil {
		t.Fatalf("Connect (WS /ws with Basic clientID:authKey) failed: %v", err)
	}
	go h.dispatch()
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		for err := range c.ErrorCh() {
			h.t.Logf("service.Client error: %v", err)
		}
	}()
	t.Cleanup(func() {
		for _, p := range h.allPeers() {
			p.close()
		}
		_ = c.Close()
		select {
		case <-h.done:
		case <-time.After(5 * time.Second):
			t.Logf("cleanup: dispatcher did not stop")
		}
		select {
		case <-errDone:
		case <-time.After(5 * time.Second):
			t.Logf("cleanup: error reader did not stop")
		}
	})
	return h
}

// fail records an error found asynchronously (from pion callbacks or the
// dispatcher); checkErrors turns them into test failures.
func (h *harness) fail(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	h.mu.Lock()
	h.errs = append(h.errs, msg)
	h.mu.Unlock()
}

func (h *harness) checkErrors(t *testing.T) {
	t.Helper()
	h.mu.Lock()
	errs := append([]string(nil), h.errs...)
	h.errs = nil
	h.mu.Unlock()
	for _, e := range errs {
		t.Errorf("async: %s", e)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
}

func (h *harness) addPeer(p *peer) {
	h.mu.Lock()
	h.peers[p.sessionID] = p
	h.mu.Unlock()
}

func (h *harness) allPeers() []*peer {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*peer, 0, len(h.peers))
	for _, p := range h.peers {
		out = append(out, p)
	}
	return out
}

func (h *harness) dispatch() {
	defer close(h.done)
	for cm := range h.client.ReceiveCh() {
		switch cm.Type {
		case service.ClientMessageHello:
			data, ok := cm.Data.(map[string]string)
			if !ok {
				h.fail("hello data has type %T, want map[string]string", cm.Data)
				continue
			}
			h.helloCh <- data
		case service.ClientMessageClose:
			data, ok := cm.Data.(map[string]string)
			if !ok {
				h.fail("close data has type %T, want map[string]string", cm.Data)
				continue
			}
			h.closeCh <- data
		case service.ClientMessageVAD:
			msg, ok := cm.Data.(rtc.Message)
			if !ok {
				h.fail("vad data has type %T, want rtc.Message", cm.Data)
				continue
			}
			select {
			case h.vadCh <- msg:
			default:
			}
		case service.ClientMessageRTC:
			msg, ok := cm.Data.(rtc.Message)
			if !ok {
				h.fail("rtc data has type %T, want rtc.Message", cm.Data)
				continue
			}
			h.mu.Lock()
			p := h.peers[msg.SessionID]
			if p == nil {
				h.unknown++
			}
			h.mu.Unlock()
			if p == nil {
				h.t.Logf("rtc message type %d for unknown session %q dropped", msg.Type, msg.SessionID)
				continue
			}
			p.deliver(msg)
		default:
			h.fail("unexpected message type %q from server (data %T)", cm.Type, cm.Data)
		}
	}
}

func (h *harness) send(t *testing.T, msgType string, data any) {
	t.Helper()
	if err := h.client.Send(*service.NewClientMessage(msgType, data)); err != nil {
		t.Fatalf("Send(%s): %v", msgType, err)
	}
}

func (h *harness) sendRTC(msg rtc.Message) error {
	return h.client.Send(*service.NewClientMessage(service.ClientMessageRTC, msg))
}

// waitHello waits for the hello the server must send right after the WS
// upgrade.
func (h *harness) waitHello(t *testing.T) map[string]string {
	t.Helper()
	select {
	case data := <-h.helloCh:
		return data
	case <-time.After(helloTimeout):
		t.Fatalf("no hello message within %s of connecting", helloTimeout)
	}
	return nil
}

// waitReconnected waits for the hello of the service.Client's reconnection after a restart.
func (h *harness) waitReconnected(t *testing.T, within time.Duration) {
	t.Helper()
	select {
	case hello := <-h.helloCh:
		t.Logf("service.Client reconnected after the restart: hello %v", hello)
	case <-time.After(within):
		t.Fatalf("service.Client did not reconnect within %s of the restart", within)
	}
}

// waitClose waits for a close message naming sessionID.
func (h *harness) waitClose(t *testing.T, sessionID string, timeout time.Duration) map[string]string {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case data := <-h.closeCh:
			if data["sessionID"] == sessionID {
				return data
			}
			t.Logf("close for other session %v while waiting for %s", data, sessionID)
		case <-deadline:
			t.Fatalf("no close message for session %s within %s", sessionID, timeout)
			return nil
		}
	}
}

// waitVAD waits for a vad message of the given type for sessionID.
func (h *harness) waitVAD(t *testing.T, sessionID string, typ rtc.MessageType, timeout time.Duration) rtc.Message {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case msg := <-h.vadCh:
			if msg.SessionID == sessionID && msg.Type == typ {
				return msg
			}
			t.Logf("vad: type %d for session %s (waiting for type %d for %s)", msg.Type, msg.SessionID, typ, sessionID)
		case <-deadline:
			t.Fatalf("no vad message type %d for session %s within %s", typ, sessionID, timeout)
			return rtc.Message{}
		}
	}
}

// drainVAD discards queued vad messages and returns them.
func (h *harness) drainVAD() []rtc.Message {
	var out []rtc.Message
	for {
		select {
		case msg := <-h.vadCh:
			out = append(out, msg)
		default:
			return out
		}
	}
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func mustJSON(t *testing.T, data []byte, v any) {
	t.Helper()
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatalf("invalid JSON %q: %v", data, err)
	}
}
