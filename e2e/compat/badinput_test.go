package compat

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc"
	"github.com/vmihailenco/msgpack/v5"
)

// Bounds used by TestBadInput.
const (
	mediaGrowth        = 40 // packets each session must gain per check (~0.8 s at 50 pps)
	mediaCheckTimeout  = 3 * time.Second
	rawProbeTimeout    = 3 * time.Second
	wsProbeTimeout     = 5 * time.Second
	offerTimeoutMin    = 9 * time.Second // rtcd: 10 s from join to close without an offer
	offerTimeoutMax    = 15 * time.Second
	oversizedFrameSize = 1<<20 + 1
)

// badResult is one line of the per-case report printed at the end.
type badResult struct {
	name, observed string
}

// TestBadInput proves that bad input on the WS (a second connection and the
// main one) and on the HTTP API never harms other sessions or calls: two
// calls with two sessions each keep exchanging media, and the main WS keeps
// working, after every case. What the server answered is logged per case so
// two servers can be compared (grep BADINPUT in the test log).
func TestBadInput(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	h := newHarness(t, env)

	var results []badResult
	record := func(name, format string, args ...any) {
		obs := fmt.Sprintf(format, args...)
		results = append(results, badResult{name, obs})
		t.Logf("BADINPUT %-28s %s", name+":", obs)
	}
	t.Cleanup(func() {
		t.Logf("BADINPUT summary (%d cases):", len(results))
		for _, r := range results {
			t.Logf("BADINPUT | %-28s | %s", r.name, r.observed)
		}
	})

	step(t, "connect_hello", h, func(t *testing.T) { h.waitHello(t) })

	call1, ch1 := newID(), newID()
	call2, ch2 := newID(), newID()
	var a, b, c, d *peer
	step(t, "join_calls", h, func(t *testing.T) {
		var err error
		for _, x := range []struct {
			pp           **peer
			name         string
			callID, chID string
		}{{&a, "A", call1, ch1}, {&b, "B", call1, ch1}, {&c, "C", call2, ch2}, {&d, "D", call2, ch2}} {
			if *x.pp, err = newPeer(h, x.name, x.name[0], false); err != nil {
				t.Fatalf("newPeer(%s): %v", x.name, err)
			}
			joinAndConnect(t, h, *x.pp, x.callID, x.chID)
		}
	})
	all := func() []*peer { return []*peer{a, b, c, d} }
	mine := map[string]string{a.sessionID: "A", b.sessionID: "B", c.sessionID: "C", d.sessionID: "D"}

	step(t, "media_flows", h, func(t *testing.T) {
		waitFor(t, "A, B, C and D to each receive >= 50 RTP packets", mediaTimeout, func() bool {
			for _, p := range all() {
				if p.recv.Load() < 50 {
					return false
				}
			}
			return true
		})
		// Each session must see exactly its partner's track: nothing leaks
		// across calls.
		partner := map[*peer]*peer{a: b, b: a, c: d, d: c}
		for _, p := range all() {
			select {
			case ti := <-p.tracksCh:
				if ti.StreamID != partner[p].sessionID {
					t.Errorf("%s: forwarded stream %q, want its call partner %s (%s)", p.name, ti.StreamID, partner[p].name, partner[p].sessionID)
				}
			default:
				t.Errorf("%s: no remote track", p.name)
			}
			select {
			case ti := <-p.tracksCh:
				t.Errorf("%s: unexpected second remote track %+v", p.name, ti)
			default:
			}
		}
		for _, p := range all() {
			t.Logf("%s", p)
		}
	})

	// unharmed asserts that every session still receives media and that the
	// main WS still round-trips (join + leave of a throwaway session in its
	// own call must produce a close), and that no session of ours was closed.
	probeCall := newID()
	unharmed := func(t *testing.T) {
		t.Helper()
		checkMedia(t, all())
		select {
		case hello := <-h.helloCh:
			t.Fatalf("main WS was re-established (new hello %v): the server dropped it", hello)
		default:
		}
		sid := newID()
		h.send(t, service.ClientMessageJoin, map[string]any{
			"callID": probeCall, "userID": newID(), "sessionID": sid, "channelID": newID(),
			"av1Support": false, "dcSignaling": false,
		})
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": sid})
		deadline := time.After(wsProbeTimeout)
		for {
			select {
			case data := <-h.closeCh:
				if data["sessionID"] == sid {
					return
				}
				if n, ok := mine[data["sessionID"]]; ok {
					t.Fatalf("server closed session %s (%s)", n, data["sessionID"])
				}
				t.Logf("close for other session %v", data)
			case <-deadline:
				t.Fatalf("main WS probe: no close for join+leave of session %s within %s", sid, wsProbeTimeout)
			}
		}
	}

	// --- Bad input on a second, raw WS connection of the same client. ---
	var rc *rawWS
	connect := func(t *testing.T) {
		t.Helper()
		if rc != nil {
			rc.close()
		}
		rc = dialRawWS(t, env.url, h.clientID, h.authKey)
	}
	t.Cleanup(func() {
		if rc != nil {
			rc.close()
		}
	})

	pack := func(t *testing.T, typ string, data any) []byte {
		t.Helper()
		b, err := service.NewPackedClientMessage(typ, data)
		if err != nil {
			t.Fatalf("pack %s: %v", typ, err)
		}
		return b
	}
	mp := func(t *testing.T, v any) []byte {
		t.Helper()
		b, err := msgpack.Marshal(v)
		if err != nil {
			t.Fatalf("msgpack: %v", err)
		}
		return b
	}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}

	rawCases := []struct {
		name  string
		frame func(t *testing.T) (int, []byte)
	}{
		{"ws_malformed_msgpack", func(t *testing.T) (int, []byte) {
			// 0xc1 is never used in msgpack.
			return websocket.BinaryMessage, []byte{0xc1, 0xff, 0x00, 0xde, 0xad}
		}},
		{"ws_join_garbage_data", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, cat(mp(t, "join"), []byte{0xc1, 0xc1, 0xc1})
		}},
		{"ws_rtc_data_not_map", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, cat(mp(t, "rtc"), mp(t, 42))
		}},
		{"ws_rtc_fields_wrong_types", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, cat(mp(t, "rtc"), mp(t, map[string]any{"session_id": 5, "type": "x", "data": true}))
		}},
		{"ws_leave_truncated_map", func(t *testing.T) (int, []byte) {
			// fixmap of 1 entry, key "sessionID", then nothing.
			return websocket.BinaryMessage, cat(mp(t, "leave"), []byte{0x81}, mp(t, "sessionID"))
		}},
		{"ws_unknown_type_bogus", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, pack(t, "bogus", map[string]any{"sessionID": a.sessionID})
		}},
		{"ws_text_frame", func(t *testing.T) (int, []byte) {
			return websocket.TextMessage, []byte(`{"type":"leave","data":{"sessionID":"` + a.sessionID + `"}}`)
		}},
		{"ws_join_missing_ids", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, pack(t, service.ClientMessageJoin, map[string]any{
				"userID": newID(), "channelID": ch1, "av1Support": false, "dcSignaling": false,
			})
		}},
		{"ws_leave_int_sessionID", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, pack(t, service.ClientMessageLeave, map[string]any{"sessionID": 12345})
		}},
		{"ws_rtc_unknown_session", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, pack(t, service.ClientMessageRTC, rtc.Message{
				SessionID: newID(), Type: rtc.SDPMessage, Data: []byte(`{"type":"offer","sdp":"v=0\r\n"}`),
			})
		}},
		{"ws_rtc_type0_sessionA", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, pack(t, service.ClientMessageRTC, rtc.Message{SessionID: a.sessionID, Type: 0, Data: []byte("x")})
		}},
		{"ws_rtc_type99_sessionA", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, pack(t, service.ClientMessageRTC, rtc.Message{SessionID: a.sessionID, Type: 99, Data: []byte("x")})
		}},
		{"ws_oversized_frame", func(t *testing.T) (int, []byte) {
			return websocket.BinaryMessage, make([]byte, oversizedFrameSize)
		}},
	}

	step(t, "raw_ws_connect", h, func(t *testing.T) {
		connect(t)
		record("raw_ws_connect", "upgrade 101, hello %v; ping probe: %s", rc.hello, rc.probe(rawProbeTimeout))
	})

	for _, tc := range rawCases {
		step(t, tc.name, h, func(t *testing.T) {
			if rc.isClosed() {
				connect(t)
			}
			mt, frame := tc.frame(t)
			werr := rc.write(mt, frame)
			state := rc.probe(rawProbeTimeout)
			extra := ""
			if werr != nil {
				extra = fmt.Sprintf(" (write error: %v)", werr)
			}
			if msgs := rc.drain(); len(msgs) > 0 {
				extra += fmt.Sprintf(" (server sent: %s)", strings.Join(msgs, "; "))
			}
			record(tc.name, "%d-byte %s frame -> conn %s%s", len(frame), frameKind(mt), state, extra)
			unharmed(t)
		})
	}

	step(t, "raw_ws_reconnect", h, func(t *testing.T) {
		connect(t)
		record("raw_ws_reconnect", "new connection: hello %v; ping probe: %s", rc.hello, rc.probe(rawProbeTimeout))
		if !strings.HasPrefix(rc.probe(rawProbeTimeout), "open") {
			t.Errorf("a fresh raw WS connection does not answer a ping")
		}
		unharmed(t)
	})

	// --- Bad signaling for session A on the main connection. ---
	mainCases := []struct {
		name string
		msg  rtc.Message
	}{
		{"main_sdp_not_json", rtc.Message{SessionID: a.sessionID, Type: rtc.SDPMessage, Data: []byte("this is not json")}},
		{"main_sdp_offer_garbage", rtc.Message{SessionID: a.sessionID, Type: rtc.SDPMessage, Data: []byte(`{"type":"offer","sdp":"garbage"}`)}},
		{"main_ice_not_json", rtc.Message{SessionID: a.sessionID, Type: rtc.ICEMessage, Data: []byte("{{{garbage")}},
		{"main_ice_garbage_candidate", rtc.Message{SessionID: a.sessionID, Type: rtc.ICEMessage, Data: []byte(`{"candidate":"candidate:garbage"}`)}},
	}
	for _, tc := range mainCases {
		step(t, tc.name, h, func(t *testing.T) {
			ans0, off0, _ := a.counts()
			if err := h.sendRTC(tc.msg); err != nil {
				t.Fatalf("send: %v", err)
			}
			unharmed(t)
			ans1, off1, _ := a.counts()
			record(tc.name, "A data %q -> A still sends and receives media; SDP answers/offers sent to A since: %d/%d",
				tc.msg.Data, ans1-ans0, off1-off0)
		})
	}

	// --- HTTP. ---
	step(t, "http_ws_wrong_basic", h, func(t *testing.T) {
		status, body := rawUpgrade(t, env.url, "Basic "+base64.StdEncoding.EncodeToString([]byte(h.clientID+":"+newAuthKey())))
		if status == http.StatusSwitchingProtocols {
			t.Errorf("server upgraded /ws with a wrong authKey")
		}
		record("http_ws_wrong_basic", "GET /ws upgrade -> %d, body %q", status, body)
		unharmed(t)
	})
	httpCases := []struct {
		name, path, body string
		user, pass       string
		want             int
	}{
		{"http_register_short_key", "/register", fmt.Sprintf(`{"clientID":%q,"authKey":"short"}`, newID()), "admin", env.adminKey, http.StatusBadRequest},
		{"http_register_duplicate", "/register", fmt.Sprintf(`{"clientID":%q,"authKey":%q}`, h.clientID, newAuthKey()), "admin", env.adminKey, http.StatusBadRequest},
		{"http_login_wrong_key", "/login", fmt.Sprintf(`{"clientID":%q,"authKey":%q}`, h.clientID, newAuthKey()), "", "", http.StatusBadRequest},
		{"http_register_not_json", "/register", "this is not json", "admin", env.adminKey, http.StatusBadRequest},
	}
	for _, tc := range httpCases {
		step(t, tc.name, h, func(t *testing.T) {
			code, _, body := env.rawRequest(t, http.MethodPost, tc.path, strings.NewReader(tc.body), tc.user, tc.pass)
			record(tc.name, "POST %s -> %d %s", tc.path, code, strings.TrimSpace(string(body)))
			if code != tc.want {
				t.Errorf("POST %s %s = %d %s, want %d", tc.path, tc.body, code, body, tc.want)
			}
			unharmed(t)
		})
	}
	step(t, "http_credentials_unchanged", h, func(t *testing.T) {
		// After the duplicate register and the failed login the original
		// key must still work.
		code, _, body := env.rawRequest(t, http.MethodPost, "/login",
			strings.NewReader(fmt.Sprintf(`{"clientID":%q,"authKey":%q}`, h.clientID, h.authKey)), "", "")
		if code != http.StatusOK {
			t.Errorf("POST /login with the original key = %d %s, want 200", code, body)
		}
		code, _, _ = env.rawRequest(t, http.MethodGet, "/calls/"+call1+"/sessions", nil, h.clientID, h.authKey)
		if code != http.StatusOK {
			t.Errorf("GET /calls/{call1}/sessions with the original key = %d, want 200", code)
		}
		record("http_credentials_unchanged", "login with original key -> 200; GET sessions -> %d", code)
	})

	// --- A joined session that never offers. ---
	step(t, "join_without_offer_E", h, func(t *testing.T) {
		sidE := newID()
		unknown0 := h.unknownCount()
		start := time.Now()
		h.send(t, service.ClientMessageJoin, map[string]any{
			"callID": call1, "userID": newID(), "sessionID": sidE, "channelID": ch1,
			"av1Support": false, "dcSignaling": false,
		})
		checks := 0
		var closedAfter time.Duration
	wait:
		for {
			checkMedia(t, all())
			checks++
			for {
				select {
				case data := <-h.closeCh:
					if data["sessionID"] == sidE {
						closedAfter = time.Since(start)
						break wait
					}
					if n, ok := mine[data["sessionID"]]; ok {
						t.Fatalf("server closed session %s (%s) while E waited for its offer", n, data["sessionID"])
					}
					t.Logf("close for other session %v", data)
					continue
				default:
				}
				break
			}
			if time.Since(start) > offerTimeoutMax {
				t.Fatalf("no close for session E within %s of its join (media checked %d times meanwhile)", offerTimeoutMax, checks)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if closedAfter < offerTimeoutMin {
			t.Errorf("close for E came %s after join, want about 10 s (>= %s)", closedAfter.Round(time.Millisecond), offerTimeoutMin)
		}
		record("join_without_offer_E", "close for E after %s; %d media checks of A-D passed meanwhile; rtc msgs for E: %d",
			closedAfter.Round(time.Millisecond), checks, h.unknownCount()-unknown0)
		unharmed(t)
		cfgs, code, err := h.client.GetSessions(call1)
		if err != nil || code != http.StatusOK || len(cfgs) != 2 {
			t.Errorf("GetSessions(call1) after E timed out = %d sessions, %d, %v; want A and B", len(cfgs), code, err)
		}
	})

	step(t, "final_state", h, func(t *testing.T) {
		for _, p := range all() {
			if n := p.recvOther.Load(); n != 0 {
				t.Errorf("%s: %d packets with wrong PT/size or its own tag", p.name, n)
			}
			select {
			case ti := <-p.tracksCh:
				t.Errorf("%s: unexpected extra remote track %+v", p.name, ti)
			default:
			}
			t.Logf("%s", p)
		}
	})
}

func (h *harness) unknownCount() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.unknown
}

func frameKind(mt int) string {
	if mt == websocket.TextMessage {
		return "text"
	}
	return "binary"
}

// joinAndConnect joins p into callID over the main WS, offers and waits for
// the PeerConnection and DataChannel, then starts sending RTP.
func joinAndConnect(t *testing.T, h *harness, p *peer, callID, channelID string) {
	t.Helper()
	joinAndWait(t, h, p, callID, channelID)
	p.startRTP()
}

// joinAndWait joins p into callID over the main WS, offers and waits for the
// PeerConnection and DataChannel.
func joinAndWait(t *testing.T, h *harness, p *peer, callID, channelID string) {
	t.Helper()
	h.send(t, service.ClientMessageJoin, p.joinMsg(callID, channelID))
	if err := p.offer(); err != nil {
		t.Fatalf("%s: offer: %v", p.name, err)
	}
	select {
	case <-p.connectedCh:
	case <-time.After(connectTimeout):
		t.Fatalf("%s: peer connection not connected within %s (%s)", p.name, connectTimeout, p)
	}
	select {
	case <-p.dcOpenCh:
	case <-time.After(connectTimeout):
		t.Fatalf("%s: data channel not open within %s", p.name, connectTimeout)
	}
}

// checkMedia waits (bounded) until every peer has received mediaGrowth more
// packets than when called.
func checkMedia(t *testing.T, peers []*peer) {
	t.Helper()
	start := make([]int64, len(peers))
	for i, p := range peers {
		start[i] = p.recv.Load()
	}
	deadline := time.Now().Add(mediaCheckTimeout)
	for {
		ok := true
		for i, p := range peers {
			if p.recv.Load()-start[i] < mediaGrowth {
				ok = false
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			var sb strings.Builder
			for i, p := range peers {
				fmt.Fprintf(&sb, " %s:+%d", p.name, p.recv.Load()-start[i])
			}
			for _, p := range peers {
				t.Logf("peer state: %s", p)
			}
			t.Fatalf("media stalled: within %s not every session received %d more packets;%s", mediaCheckTimeout, mediaGrowth, sb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// rawWS is a second WS connection of the plugin's client, driven frame by
// frame. A reader goroutine collects server messages, pongs and the close.
type rawWS struct {
	ws     *websocket.Conn
	hello  map[string]string
	pongCh chan string
	msgCh  chan string
	done   chan struct{}

	mu     sync.Mutex
	err    error
	nprobe int
}

func dialRawWS(t *testing.T, base, clientID, authKey string) *rawWS {
	t.Helper()
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	u.Scheme = "ws"
	u.Path = "/ws"
	hdr := http.Header{}
	hdr.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(clientID+":"+authKey)))
	dialer := websocket.Dialer{HandshakeTimeout: 10 * time.Second}
	ws, resp, err := dialer.Dial(u.String(), hdr)
	if err != nil {
		status := 0
		if resp != nil {
			status = resp.StatusCode
		}
		t.Fatalf("raw WS dial: %v (status %d)", err, status)
	}
	rc := &rawWS{ws: ws, pongCh: make(chan string, 16), msgCh: make(chan string, 64), done: make(chan struct{})}
	ws.SetPongHandler(func(data string) error {
		select {
		case rc.pongCh <- data:
		default:
		}
		return nil
	})
	// The first message must be the hello.
	_ = ws.SetReadDeadline(time.Now().Add(helloTimeout))
	mt, data, err := ws.ReadMessage()
	if err != nil {
		t.Fatalf("raw WS: no hello: %v", err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	var cm service.ClientMessage
	if mt != websocket.BinaryMessage {
		t.Fatalf("raw WS: first message is a %d frame, want binary hello", mt)
	}
	if err := cm.Unpack(data); err != nil || cm.Type != service.ClientMessageHello {
		t.Fatalf("raw WS: first message %x (%v), want hello", data, err)
	}
	rc.hello, _ = cm.Data.(map[string]string)
	go rc.readLoop()
	return rc
}

func (rc *rawWS) readLoop() {
	defer close(rc.done)
	for {
		mt, data, err := rc.ws.ReadMessage()
		if err != nil {
			rc.mu.Lock()
			rc.err = err
			rc.mu.Unlock()
			return
		}
		desc := fmt.Sprintf("%s frame %x", frameKind(mt), data)
		var cm service.ClientMessage
		if mt == websocket.BinaryMessage && cm.Unpack(data) == nil {
			desc = fmt.Sprintf("%s %v", cm.Type, cm.Data)
		}
		select {
		case rc.msgCh <- desc:
		default:
		}
	}
}

func (rc *rawWS) write(mt int, data []byte) error {
	_ = rc.ws.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return rc.ws.WriteMessage(mt, data)
}

func (rc *rawWS) isClosed() bool {
	select {
	case <-rc.done:
		return true
	default:
		return false
	}
}

func (rc *rawWS) closeReason() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	var ce *websocket.CloseError
	if errors.As(rc.err, &ce) {
		return fmt.Sprintf("close frame %d %q", ce.Code, ce.Text)
	}
	return fmt.Sprintf("%v", rc.err)
}

// probe sends a WS ping and reports whether the server is still reading
// this connection: "open (pong)", "closed by server: ..." or "no pong ...".
// The server reads frames in order, so a pong proves it got past the
// previous (bad) frame without dropping the connection.
func (rc *rawWS) probe(timeout time.Duration) string {
	if rc.isClosed() {
		return "closed by server: " + rc.closeReason()
	}
	rc.mu.Lock()
	rc.nprobe++
	tag := fmt.Sprintf("probe-%d", rc.nprobe)
	rc.mu.Unlock()
	if err := rc.ws.WriteControl(websocket.PingMessage, []byte(tag), time.Now().Add(timeout)); err != nil {
		select {
		case <-rc.done:
			return "closed by server: " + rc.closeReason()
		case <-time.After(timeout):
			return fmt.Sprintf("ping write failed (%v), reader still running", err)
		}
	}
	deadline := time.After(timeout)
	for {
		select {
		case p := <-rc.pongCh:
			if p == tag {
				return "open (pong)"
			}
		case <-rc.done:
			return "closed by server: " + rc.closeReason()
		case <-deadline:
			return fmt.Sprintf("no pong and no close within %s", timeout)
		}
	}
}

func (rc *rawWS) drain() []string {
	var out []string
	for {
		select {
		case m := <-rc.msgCh:
			out = append(out, m)
		default:
			return out
		}
	}
}

func (rc *rawWS) close() {
	_ = rc.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second))
	_ = rc.ws.Close()
	select {
	case <-rc.done:
	case <-time.After(2 * time.Second):
	}
}
