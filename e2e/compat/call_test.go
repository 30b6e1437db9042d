package compat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc"
	"github.com/mattermost/rtcd/service/rtc/dc"
	"github.com/pion/webrtc/v4"
)

// connIDAlphabet is the base32 alphabet of rtcd's random.NewID (connID).
const connIDAlphabet = "ybndrfg8ejkmcpqxot1uwisza345h769"

func keysOf[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// step runs one named stage of a scenario and stops the scenario at the
// first failing stage, so `go test -v` shows exactly how far a server got.
func step(t *testing.T, name string, h *harness, fn func(t *testing.T)) {
	t.Helper()
	ok := t.Run(name, func(t *testing.T) {
		fn(t)
		if h != nil {
			h.checkErrors(t)
		}
	})
	if !ok {
		if h != nil {
			for _, p := range h.allPeers() {
				t.Logf("peer state: %s", p)
			}
		}
		t.FailNow()
	}
}

// TestCall is what the Calls plugin plus two webapp sessions do against
// rtcd: connect, join two sessions into one call, exchange audio, mute,
// unmute and leave.
func TestCall(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)

	var h *harness
	callID, channelID := newID(), newID()

	// Register a fresh client through the admin key, then connect the WS.
	h = newHarness(t, env)

	step(t, "connect_hello", h, func(t *testing.T) {
		hello := h.waitHello(t)
		if got := keysOf(hello); strings.Join(got, ",") != "clientID,connID" {
			t.Errorf("hello keys = %v, want [clientID connID]", got)
		}
		if hello["clientID"] != h.clientID {
			t.Errorf("hello clientID = %q, want %q", hello["clientID"], h.clientID)
		}
		connID := hello["connID"]
		if len(connID) != 26 || strings.Trim(connID, connIDAlphabet) != "" {
			t.Errorf("hello connID = %q, want 26 chars of %q", connID, connIDAlphabet)
		}
		t.Logf("hello: %v", hello)
	})

	step(t, "version_system", h, func(t *testing.T) {
		info, err := h.client.GetVersionInfo()
		if err != nil {
			t.Fatalf("GetVersionInfo: %v", err)
		}
		if info.BuildVersion == "" || info.GoOS == "" || info.GoArch == "" {
			t.Errorf("GetVersionInfo = %+v: buildVersion/goOS/goArch must be set", info)
		}
		t.Logf("version: %+v", info)
		sys, err := h.client.GetSystemInfo()
		if err != nil {
			t.Fatalf("GetSystemInfo: %v", err)
		}
		t.Logf("system: %+v", sys)
	})

	var a, b *peer
	join := func(t *testing.T, p *peer) {
		joinAndWait(t, h, p, callID, channelID)
		if answers, _, cands := p.counts(); answers != 1 || cands == 0 {
			t.Fatalf("%s: got %d answers and %d candidates from rtcd, want 1 answer and some candidates", p.name, answers, cands)
		}
		p.mu.Lock()
		t.Logf("%s: first server ICE message data: %s", p.name, p.candShapes[0])
		p.mu.Unlock()
		p.startRTP()
	}

	step(t, "join_A", h, func(t *testing.T) {
		var err error
		if a, err = newPeer(h, "A", 'A', true); err != nil {
			t.Fatalf("newPeer(A): %v", err)
		}
		join(t, a)
	})

	step(t, "join_B", h, func(t *testing.T) {
		var err error
		if b, err = newPeer(h, "B", 'B', false); err != nil {
			t.Fatalf("newPeer(B): %v", err)
		}
		join(t, b)
	})

	step(t, "get_sessions", h, func(t *testing.T) {
		cfgs, code, err := h.client.GetSessions(callID)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GetSessions(callID) = %d, %v; want 200", code, err)
		}
		if len(cfgs) != 2 {
			t.Fatalf("GetSessions returned %d sessions, want 2: %+v", len(cfgs), cfgs)
		}
		byID := map[string]rtc.SessionConfig{}
		for _, c := range cfgs {
			byID[c.SessionID] = c
		}
		for _, p := range []*peer{a, b} {
			c, ok := byID[p.sessionID]
			if !ok {
				t.Errorf("session %s (%s) missing from GetSessions", p.sessionID, p.name)
				continue
			}
			if c.GroupID != h.clientID || c.CallID != callID || c.UserID != p.userID {
				t.Errorf("%s: session config %+v: want GroupID=%s CallID=%s UserID=%s", p.name, c, h.clientID, callID, p.userID)
			}
			if c.Props.ChannelID() != channelID || c.Props.AV1Support() || c.Props.DCSignaling() {
				t.Errorf("%s: session props %v: want channelID=%s av1Support=false dcSignaling=false", p.name, c.Props, channelID)
			}
		}

		// Exact JSON shape (Go field names; encoding/json's decoding above is
		// case-insensitive so it cannot prove them).
		code, hdr, body := env.rawRequest(t, http.MethodGet, "/calls/"+callID+"/sessions", nil, h.clientID, h.authKey)
		if code != http.StatusOK {
			t.Fatalf("raw GET /calls/{id}/sessions = %d %q", code, body)
		}
		if ct := hdr.Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type = %q, want application/json", ct)
		}
		var raw []map[string]json.RawMessage
		mustJSON(t, body, &raw)
		for _, s := range raw {
			if got := strings.Join(keysOf(s), ","); got != "CallID,GroupID,Props,SessionID,UserID" {
				t.Errorf("session JSON keys = %s, want CallID,GroupID,Props,SessionID,UserID (%s)", got, body)
			}
			var props map[string]any
			mustJSON(t, s["Props"], &props)
			if got := strings.Join(keysOf(props), ","); got != "av1Support,channelID,dcSignaling" {
				t.Errorf("Props keys = %s, want av1Support,channelID,dcSignaling", got)
			}
			if props["av1Support"] != false || props["dcSignaling"] != false {
				t.Errorf("Props = %v: want av1Support and dcSignaling JSON false", props)
			}
		}
		t.Logf("GET /calls/{callID}/sessions: %s", bytes.TrimSpace(body))

		one, code, err := h.client.GetSession(callID, a.sessionID)
		if err != nil || code != http.StatusOK || one.SessionID != a.sessionID || one.UserID != a.userID {
			t.Errorf("GetSession(callID, A) = %+v, %d, %v", one, code, err)
		}
	})

	step(t, "media_flows", h, func(t *testing.T) {
		waitFor(t, "B to receive >= 50 RTP packets from A and A >= 50 from B", mediaTimeout, func() bool {
			return a.recv.Load() >= 50 && b.recv.Load() >= 50
		})
		for _, pair := range [][2]*peer{{a, b}, {b, a}} {
			rx, tx := pair[0], pair[1]
			select {
			case ti := <-rx.tracksCh:
				wantPrefix := "voice_" + tx.sessionID + "_"
				if !strings.HasPrefix(ti.ID, wantPrefix) || len(ti.ID) != len(wantPrefix)+8 {
					t.Errorf("%s: forwarded track id %q, want %q + 8 chars", rx.name, ti.ID, wantPrefix)
				}
				if ti.StreamID != tx.sessionID {
					t.Errorf("%s: forwarded stream id %q, want sender session %q", rx.name, ti.StreamID, tx.sessionID)
				}
				if !strings.EqualFold(ti.MimeType, webrtc.MimeTypeOpus) || ti.PayloadType != opusPT {
					t.Errorf("%s: forwarded codec %s/%d, want audio/opus/111", rx.name, ti.MimeType, ti.PayloadType)
				}
				t.Logf("%s receives track id=%s stream=%s", rx.name, ti.ID, ti.StreamID)
			default:
				t.Errorf("%s: no OnTrack recorded", rx.name)
			}
			if _, offers, _ := rx.counts(); offers < 1 {
				t.Errorf("%s: rtcd sent no renegotiation offer for the forwarded track", rx.name)
			}
			if n := rx.recvOther.Load(); n != 0 {
				t.Errorf("%s: %d packets with wrong PT/size or its own tag", rx.name, n)
			}
			// rtcd sends a MediaMap (DC type 9) before each offer.
			found := false
			for _, mm := range rx.getMediaMaps() {
				for mid, info := range mm {
					t.Logf("%s: MediaMap mid=%s type=%s sender_id=%s", rx.name, mid, info.Type, info.SenderID)
					if info.Type == "voice" {
						found = true
					}
				}
			}
			if !found {
				t.Errorf("%s: no DC MediaMap with a voice entry received", rx.name)
			}
		}
		t.Logf("%s / %s", a, b)
	})

	if !env.skip["vad"] {
		step(t, "vad_voice_on", h, func(t *testing.T) {
			msg := h.waitVAD(t, a.sessionID, rtc.VoiceOnMessage, 5*time.Second)
			if len(msg.Data) != 0 {
				t.Errorf("VoiceOn data = %q, want none", msg.Data)
			}
			if msg.GroupID != h.clientID || msg.CallID != callID || msg.UserID != a.userID {
				t.Errorf("VoiceOn message %+v: want group_id/call_id/user_id of A", msg)
			}
			for _, m := range h.drainVAD() {
				if m.SessionID == b.sessionID && m.Type == rtc.VoiceOnMessage {
					t.Errorf("VoiceOn for silent session B")
				}
			}
		})
	}

	if !env.skip["dc"] {
		step(t, "dc_ping_lock", h, func(t *testing.T) {
			ping, _ := dc.EncodeMessage(dc.MessageTypePing, nil)
			if err := a.dc.Send(ping); err != nil {
				t.Fatalf("DC send ping: %v", err)
			}
			m, err := a.waitDC(3*time.Second, func(m dcMessage) bool { return !m.text && m.msgType == dc.MessageTypePong })
			if err != nil {
				t.Fatalf("DC Ping: %v", err)
			}
			if want, _ := dc.EncodeMessage(dc.MessageTypePong, nil); !bytes.Equal(m.raw, want) {
				t.Errorf("DC Pong bytes %x, want %x", m.raw, want)
			}
			if err := a.dc.SendText("ping"); err != nil {
				t.Fatalf("DC send legacy ping: %v", err)
			}
			if _, err := a.waitDC(3*time.Second, func(m dcMessage) bool { return m.text && string(m.raw) == "pong" }); err != nil {
				t.Fatalf(`legacy text "ping": %v`, err)
			}
			// Signaling lock, as the webapp takes it before renegotiating.
			lock, _ := dc.EncodeMessage(dc.MessageTypeLock, nil)
			deadline := time.Now().Add(5 * time.Second)
			for {
				if err := a.dc.Send(lock); err != nil {
					t.Fatalf("DC send lock: %v", err)
				}
				m, err := a.waitDC(2*time.Second, func(m dcMessage) bool { return !m.text && m.msgType == dc.MessageTypeLock })
				if err != nil {
					t.Fatalf("DC Lock: %v", err)
				}
				got, ok := m.payload.(bool)
				if !ok {
					t.Fatalf("DC Lock reply %x has no bool payload", m.raw)
				}
				if got {
					if want, _ := dc.EncodeMessage(dc.MessageTypeLock, true); !bytes.Equal(m.raw, want) {
						t.Errorf("DC Lock(true) bytes %x, want %x", m.raw, want)
					}
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("DC Lock never granted within 5s")
				}
				time.Sleep(100 * time.Millisecond)
			}
			unlock, _ := dc.EncodeMessage(dc.MessageTypeUnlock, nil)
			if err := a.dc.Send(unlock); err != nil {
				t.Fatalf("DC send unlock: %v", err)
			}
			// Metrics messages get no reply but must not break anything.
			for _, mt := range []dc.MessageType{dc.MessageTypeLossRate, dc.MessageTypeRoundTripTime, dc.MessageTypeJitter} {
				msg, _ := dc.EncodeMessage(mt, 0.01)
				if err := a.dc.Send(msg); err != nil {
					t.Fatalf("DC send %d: %v", mt, err)
				}
			}
			// After Unlock the lock must be free again.
			if err := a.dc.Send(lock); err != nil {
				t.Fatalf("DC send lock: %v", err)
			}
			m, err = a.waitDC(2*time.Second, func(m dcMessage) bool { return !m.text && m.msgType == dc.MessageTypeLock })
			if err != nil || m.payload != true {
				t.Fatalf("DC Lock after Unlock = %v, %v; want Lock(true)", m.payload, err)
			}
			if err := a.dc.Send(unlock); err != nil {
				t.Fatalf("DC send unlock: %v", err)
			}
		})
	}

	// Mattermost's Calls dashboard plots rtcd_rtc_rtp_tracks_writes_time by type: both
	// servers observe every forwarded voice packet's write.
	step(t, "tracks_writes_time", h, func(t *testing.T) {
		_, _, body := env.rawRequest(t, http.MethodGet, "/metrics", nil, "", "")
		prefix := fmt.Sprintf(`rtcd_rtc_rtp_tracks_writes_time_count{groupID="%s",type="voice"} `, h.clientID)
		var count float64
		for _, line := range strings.Split(string(body), "\n") {
			if v, ok := strings.CutPrefix(line, prefix); ok {
				count, _ = strconv.ParseFloat(strings.TrimSpace(v), 64)
			}
		}
		if count < 50 {
			t.Fatalf("%s... = %v, want the voice writes of this call (>= 50)", prefix, count)
		}
		t.Logf("voice track writes observed: %v", count)
	})

	step(t, "mute_A", h, func(t *testing.T) {
		if err := h.sendRTC(rtc.Message{SessionID: a.sessionID, Type: rtc.MuteMessage}); err != nil {
			t.Fatalf("send mute: %v", err)
		}
		if !env.skip["vad"] {
			// Mute resets the VAD, which always emits VoiceOff.
			h.waitVAD(t, a.sessionID, rtc.VoiceOffMessage, 3*time.Second)
		}
		time.Sleep(500 * time.Millisecond)
		b0, a0 := b.recv.Load(), a.recv.Load()
		time.Sleep(time.Second)
		b1, a1 := b.recv.Load(), a.recv.Load()
		if b1-b0 > 2 {
			t.Errorf("B still received %d packets from muted A in 1s", b1-b0)
		}
		if a1-a0 < 20 {
			t.Errorf("A received only %d packets from unmuted B in 1s", a1-a0)
		}
		t.Logf("while A muted, 1s: B got %d, A got %d", b1-b0, a1-a0)
	})

	step(t, "unmute_A", h, func(t *testing.T) {
		b0 := b.recv.Load()
		if err := h.sendRTC(rtc.Message{SessionID: a.sessionID, Type: rtc.UnmuteMessage}); err != nil {
			t.Fatalf("send unmute: %v", err)
		}
		waitFor(t, "B to receive >= 25 more packets after unmute", 3*time.Second, func() bool {
			return b.recv.Load()-b0 >= 25
		})
	})

	step(t, "leave_A", h, func(t *testing.T) {
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": a.sessionID})
		data := h.waitClose(t, a.sessionID, closeTimeout)
		if got := keysOf(data); len(got) != 1 || got[0] != "sessionID" {
			t.Errorf("close data keys = %v, want [sessionID]", got)
		}
		a.close()
		// A's forwarded track is detached from B without renegotiation.
		time.Sleep(500 * time.Millisecond)
		b0 := b.recv.Load()
		time.Sleep(time.Second)
		if d := b.recv.Load() - b0; d > 2 {
			t.Errorf("B still received %d packets from A after A left", d)
		}
		cfgs, code, err := h.client.GetSessions(callID)
		if err != nil || code != http.StatusOK || len(cfgs) != 1 || cfgs[0].SessionID != b.sessionID {
			t.Errorf("GetSessions after A left = %+v, %d, %v; want only B", cfgs, code, err)
		}
	})

	step(t, "leave_B", h, func(t *testing.T) {
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": b.sessionID})
		h.waitClose(t, b.sessionID, closeTimeout)
		b.close()
		_, code, _ := h.client.GetSessions(callID)
		if code != http.StatusNotFound {
			t.Errorf("GetSessions after everyone left = %d, want 404", code)
		}
	})
}
