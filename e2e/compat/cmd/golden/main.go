// Command golden writes byte-exact wire vectors produced by rtcd v1.2.6's own
// exported encoders, for the Rust implementation to compare against.
//
// WebSocket messages go through service.ClientMessage (the same
// EncodeMsgpack that ClientMessage.Pack and rtcd's server use), DataChannel
// messages through service/rtc/dc.EncodeMessage. Every input is a fixed
// value written to manifest.json next to the vectors.
//
// Usage: go run ./cmd/golden -out <dir>
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"reflect"

	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc"
	"github.com/mattermost/rtcd/service/rtc/dc"
	"github.com/pion/webrtc/v4"
	"github.com/vmihailenco/msgpack/v5"
)

// Fixed ids (26 chars each, like Mattermost / rtcd ids).
const (
	clientID  = "clientid000000000000000001"
	connID    = "ybndrfg8ejkmcpqxot1uwisza3" // rtcd's connID alphabet
	callID    = "callid00000000000000000001"
	channelID = "channelid00000000000000001"
	userID    = "userid00000000000000000001"
	sessionID = "sessionid00000000000000001"
	streamID  = "streamid000000000000000001"
)

// Fixed SDP bodies (short but syntactically SDP-like; rtcd's codecs never
// parse them).
const (
	offerSDP  = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
	answerSDP = "v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\na=rtpmap:111 opus/48000/2\r\na=fmtp:111 minptime=10;useinbandfec=1\r\n"
)

type vector struct {
	File     string `json:"file"`
	Kind     string `json:"kind"` // "ws" (one WebSocket binary frame) or "dc" (one DataChannel message)
	Function string `json:"function"`
	Input    any    `json:"input"`
	// SortedMapKeys: the data contains a Go map with more than one key. rtcd
	// writes Go maps in random order, so the vector was encoded with
	// msgpack's SetSortMapKeys(true); compare such messages by decoded value
	// (the vector's byte layout is one valid order among several).
	SortedMapKeys bool `json:"sorted_map_keys"`
	// Deterministic: whether rtcd itself always emits exactly these bytes.
	Deterministic bool   `json:"deterministic"`
	Note          string `json:"note,omitempty"`
	Hex           string `json:"hex"`
}

type manifest struct {
	Generator string   `json:"generator"`
	Source    string   `json:"source"`
	Msgpack   string   `json:"msgpack"`
	Notes     []string `json:"notes"`
	Vectors   []vector `json:"vectors"`
}

func main() {
	out := flag.String("out", "", "output directory")
	flag.Parse()
	if *out == "" {
		log.Fatal("-out is required")
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		log.Fatal(err)
	}

	var vecs []vector
	vecs = append(vecs, wsVectors()...)
	vecs = append(vecs, dcVectors()...)

	seen := map[string]bool{}
	for _, v := range vecs {
		if seen[v.File] {
			log.Fatalf("duplicate vector %s", v.File)
		}
		seen[v.File] = true
		if err := os.WriteFile(filepath.Join(*out, v.File), []byte(v.Hex+"\n"), 0o644); err != nil {
			log.Fatal(err)
		}
	}

	m := manifest{
		Generator: "e2e/compat/cmd/golden (gen-golden.sh)",
		Source:    "github.com/mattermost/rtcd v1.2.6 (service.ClientMessage, service/rtc.Message, service/rtc/dc.EncodeMessage); pion/webrtc/v4 v4.2.6 for SDP/ICE JSON",
		Msgpack:   "github.com/vmihailenco/msgpack/v5 v5.4.1",
		Notes: []string{
			"Each .hex file holds one message as lowercase hex plus a newline.",
			"ws_*: one WebSocket binary frame = two concatenated msgpack values: the type string, then the data (ClientMessage.EncodeMsgpack = EncodeMulti(type, data)). No array/map wrapper.",
			"rtc.Message is a msgpack map in struct field order: group_id, user_id, session_id, call_id (str), type (int), data (bin, omitted when empty). Messages from the plugin leave group_id/user_id/call_id empty but present.",
			"rtc.Message.data holds UTF-8 JSON; input.data_utf8 gives it as text, encoded as msgpack bin.",
			"dc_*: one DataChannel binary message = msgpack uint8 type (always 0xcc NN), then the optional msgpack payload. Legacy text 'ping' (not msgpack) gets text 'pong'.",
			"dc_sdp: payload is msgpack bin of zlib(JSON) made by Go's compress/zlib at default level; other zlib encoders produce different bytes, so compare the type byte and the inflated JSON, not the raw bytes.",
			"sorted_map_keys=true: multi-key Go maps; rtcd emits their keys in random order. Decoders must accept any key order; the vector uses sorted keys.",
			"Ints: the rtc.Message type field (Go int) and DC floats/bools are encoded exactly as shown; decoders must still accept any msgpack int width.",
		},
		Vectors: vecs,
	}
	js, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		log.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*out, "manifest.json"), append(js, '\n'), 0o644); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("wrote %d vectors and manifest.json to %s\n", len(vecs), *out)
}

// packWS encodes a ClientMessage with rtcd's own encoder. When the data holds
// a multi-key map, Pack's output order is random, so the vector is encoded
// through the same EncodeMsgpack method on an encoder with sorted map keys,
// and Pack's output is checked to be a permutation that decodes equal.
func packWS(msgType string, data any) ([]byte, bool) {
	cm := service.NewClientMessage(msgType, data)
	packed, err := cm.Pack()
	if err != nil {
		log.Fatalf("Pack(%s): %v", msgType, err)
	}

	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.SetSortMapKeys(true)
	if err := cm.EncodeMsgpack(enc); err != nil {
		log.Fatalf("EncodeMsgpack(%s): %v", msgType, err)
	}
	sorted := buf.Bytes()

	multi := multiKeyMap(data)
	if !multi && !bytes.Equal(packed, sorted) {
		log.Fatalf("%s: Pack and sorted encoding differ for deterministic data: %x vs %x", msgType, packed, sorted)
	}
	if multi && len(packed) != len(sorted) {
		log.Fatalf("%s: Pack length %d != sorted length %d", msgType, len(packed), len(sorted))
	}

	// Round trip through rtcd's decoder.
	var back service.ClientMessage
	if err := back.Unpack(sorted); err != nil {
		log.Fatalf("%s: Unpack: %v", msgType, err)
	}
	if back.Type != msgType {
		log.Fatalf("%s: round trip type %q", msgType, back.Type)
	}
	if !equalData(data, back.Data) {
		log.Fatalf("%s: round trip data %#v != %#v", msgType, back.Data, data)
	}
	return sorted, multi
}

func multiKeyMap(v any) bool {
	rv := reflect.ValueOf(v)
	return rv.Kind() == reflect.Map && rv.Len() > 1
}

func equalData(in, out any) bool {
	switch x := in.(type) {
	case rtc.Message:
		y, ok := out.(rtc.Message)
		if !ok {
			return false
		}
		if len(x.Data) == 0 && len(y.Data) == 0 {
			x.Data, y.Data = nil, nil
		}
		return reflect.DeepEqual(x, y)
	default:
		return reflect.DeepEqual(in, out)
	}
}

func rtcInput(m rtc.Message) map[string]any {
	return map[string]any{
		"group_id":   m.GroupID,
		"user_id":    m.UserID,
		"session_id": m.SessionID,
		"call_id":    m.CallID,
		"type":       int(m.Type),
		"data_utf8":  string(m.Data),
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		log.Fatal(err)
	}
	return b
}

func wsVectors() []vector {
	var vecs []vector
	add := func(file, msgType string, data any, input any, note string) {
		b, multi := packWS(msgType, data)
		vecs = append(vecs, vector{
			File:          file,
			Kind:          "ws",
			Function:      "service.NewClientMessage(type, data).EncodeMsgpack (as ClientMessage.Pack)",
			Input:         map[string]any{"type": msgType, "data": input},
			SortedMapKeys: multi,
			Deterministic: !multi,
			Note:          note,
			Hex:           hex.EncodeToString(b),
		})
	}

	hello := map[string]string{"clientID": clientID, "connID": connID}
	add("ws_hello.hex", service.ClientMessageHello, hello, hello, "rtcd -> plugin right after the WS upgrade; data is map[string]string")

	join := map[string]any{
		"callID":      callID,
		"userID":      userID,
		"sessionID":   sessionID,
		"channelID":   channelID,
		"av1Support":  false,
		"dcSignaling": false,
	}
	add("ws_join.hex", service.ClientMessageJoin, join, join, "plugin -> rtcd; map[string]any; groupID is not sent (rtcd uses the authenticated clientID)")

	joinAV1 := map[string]any{
		"callID":      callID,
		"userID":      userID,
		"sessionID":   sessionID,
		"channelID":   channelID,
		"av1Support":  true,
		"dcSignaling": true,
	}
	add("ws_join_av1_dcsignaling.hex", service.ClientMessageJoin, joinAV1, joinAV1, "join with both flags true")

	sess := map[string]string{"sessionID": sessionID}
	add("ws_leave.hex", service.ClientMessageLeave, sess, sess, "plugin -> rtcd")
	add("ws_reconnect.hex", service.ClientMessageReconnect, sess, sess, "plugin -> rtcd; the original sessionID")
	add("ws_close.hex", service.ClientMessageClose, sess, sess, "rtcd -> plugin when a session ends")

	// rtc messages as the plugin sends them: only session_id, type, data.
	offerJSON := mustJSON(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP})
	plugin := func(t rtc.MessageType, data []byte) rtc.Message {
		return rtc.Message{SessionID: sessionID, Type: t, Data: data}
	}
	candInit := webrtc.ICECandidateInit{
		Candidate:        "candidate:1966762134 1 udp 2130706431 127.0.0.1 50000 typ host",
		SDPMid:           ptr("0"),
		SDPMLineIndex:    ptr(uint16(0)),
		UsernameFragment: ptr("abcd"),
	}
	for _, v := range []struct {
		file string
		msg  rtc.Message
		note string
	}{
		{"ws_rtc_sdp_offer_from_plugin.hex", plugin(rtc.SDPMessage, offerJSON), "type 2; data is JSON webrtc.SessionDescription, uncompressed"},
		{"ws_rtc_ice_from_plugin.hex", plugin(rtc.ICEMessage, mustJSON(candInit)), "type 1; data is JSON RTCIceCandidateInit"},
		{"ws_rtc_mute.hex", plugin(rtc.MuteMessage, nil), "type 3; no data key"},
		{"ws_rtc_unmute.hex", plugin(rtc.UnmuteMessage, nil), "type 4; no data key"},
		{"ws_rtc_screen_on.hex", plugin(rtc.ScreenOnMessage, mustJSON(map[string]string{"screenStreamID": streamID})), "type 5"},
		{"ws_rtc_screen_off.hex", plugin(rtc.ScreenOffMessage, nil), "type 6"},
		{"ws_rtc_video_on.hex", plugin(rtc.VideoOnMessage, mustJSON(map[string]string{"videoStreamID": streamID})), "type 9"},
		{"ws_rtc_video_off.hex", plugin(rtc.VideoOffMessage, nil), "type 10"},
	} {
		add(v.file, service.ClientMessageRTC, v.msg, rtcInput(v.msg), v.note)
	}

	// rtc/vad messages as rtcd sends them: all ids filled in.
	full := func(t rtc.MessageType, data []byte) rtc.Message {
		return rtc.Message{GroupID: clientID, UserID: userID, SessionID: sessionID, CallID: callID, Type: t, Data: data}
	}
	answerJSON := mustJSON(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: answerSDP})
	serverOfferJSON := mustJSON(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP})
	// Same construction as rtcd's newICEMessage (service/rtc/msg.go):
	// json.Marshal(map{"type":"candidate","candidate":ICECandidate.ToJSON()}).
	hostCand := webrtc.ICECandidate{
		Foundation: "1966762134",
		Priority:   2130706431,
		Address:    "127.0.0.1",
		Protocol:   webrtc.ICEProtocolUDP,
		Port:       8443,
		Typ:        webrtc.ICECandidateTypeHost,
		Component:  1,
		SDPMid:     "0",
	}
	iceJSON := mustJSON(map[string]any{"type": "candidate", "candidate": hostCand.ToJSON()})
	for _, v := range []struct {
		file, msgType string
		msg           rtc.Message
		note          string
	}{
		{"ws_rtc_sdp_answer_from_rtcd.hex", service.ClientMessageRTC, full(rtc.SDPMessage, answerJSON), "rtcd's answer to the client's offer"},
		{"ws_rtc_sdp_offer_from_rtcd.hex", service.ClientMessageRTC, full(rtc.SDPMessage, serverOfferJSON), "rtcd-initiated renegotiation offer (same type 2; distinguished by the JSON type)"},
		{"ws_rtc_ice_from_rtcd.hex", service.ClientMessageRTC, full(rtc.ICEMessage, iceJSON), `type 1; data is {"candidate":{RTCIceCandidateInit},"type":"candidate"} (encoding/json sorts map keys; usernameFragment is null)`},
		{"ws_vad_on.hex", service.ClientMessageVAD, full(rtc.VoiceOnMessage, nil), "type 7 under ws type \"vad\"; no data"},
		{"ws_vad_off.hex", service.ClientMessageVAD, full(rtc.VoiceOffMessage, nil), "type 8 under ws type \"vad\"; no data"},
	} {
		add(v.file, v.msgType, v.msg, rtcInput(v.msg), v.note)
	}
	return vecs
}

func ptr[T any](v T) *T { return &v }

func dcVectors() []vector {
	var vecs []vector
	add := func(file string, mt dc.MessageType, payload any, input any, deterministic bool, note string) {
		b, err := dc.EncodeMessage(mt, payload)
		if err != nil {
			log.Fatalf("%s: EncodeMessage: %v", file, err)
		}
		// Round trip through rtcd's decoder.
		gotType, gotPayload, err := dc.DecodeMessage(b)
		if err != nil || gotType != mt {
			log.Fatalf("%s: DecodeMessage = %d, %v", file, gotType, err)
		}
		if payload != nil && !reflect.DeepEqual(gotPayload, payload) {
			log.Fatalf("%s: round trip payload %#v != %#v", file, gotPayload, payload)
		}
		name := dcTypeName(mt)
		vecs = append(vecs, vector{
			File:          file,
			Kind:          "dc",
			Function:      fmt.Sprintf("dc.EncodeMessage(dc.%s, payload)", name),
			Input:         map[string]any{"type": int(mt), "type_name": name, "payload": input},
			Deterministic: deterministic,
			Note:          note,
			Hex:           hex.EncodeToString(b),
		})
	}

	add("dc_ping.hex", dc.MessageTypePing, nil, nil, true, "no payload")
	add("dc_pong.hex", dc.MessageTypePong, nil, nil, true, "no payload; rtcd's reply to Ping")
	sdpJSON := mustJSON(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: offerSDP})
	add("dc_sdp.hex", dc.MessageTypeSDP, sdpJSON, map[string]any{"json_utf8": string(sdpJSON), "encoding": "msgpack bin of zlib(json)"}, false,
		"payload bytes depend on the zlib encoder; compare inflated JSON")
	add("dc_loss.hex", dc.MessageTypeLossRate, 0.05, 0.05, true, "float64")
	add("dc_rtt.hex", dc.MessageTypeRoundTripTime, 0.125, 0.125, true, "float64, seconds")
	add("dc_jitter.hex", dc.MessageTypeJitter, 0.0042, 0.0042, true, "float64, seconds")
	add("dc_lock_request.hex", dc.MessageTypeLock, nil, nil, true, "client -> rtcd; no payload")
	add("dc_lock_reply_true.hex", dc.MessageTypeLock, true, true, true, "rtcd -> client: lock granted")
	add("dc_lock_reply_false.hex", dc.MessageTypeLock, false, false, true, "rtcd -> client: lock busy, retry")
	add("dc_unlock.hex", dc.MessageTypeUnlock, nil, nil, true, "no payload")
	mm := dc.MediaMap{"1": dc.TrackInfo{Type: "voice", SenderID: sessionID}}
	add("dc_media_map.hex", dc.MessageTypeMediaMap, mm, map[string]any{"1": map[string]string{"type": "voice", "sender_id": sessionID}}, true,
		"map mid -> {type, sender_id} (TrackInfo fields in this order); a single entry so the bytes are deterministic. rtcd fills sender_id with the RECEIVING session's id (session.sendMediaMapping), not the sender's")
	return vecs
}

func dcTypeName(mt dc.MessageType) string {
	names := map[dc.MessageType]string{
		dc.MessageTypePing:          "MessageTypePing",
		dc.MessageTypePong:          "MessageTypePong",
		dc.MessageTypeSDP:           "MessageTypeSDP",
		dc.MessageTypeLossRate:      "MessageTypeLossRate",
		dc.MessageTypeRoundTripTime: "MessageTypeRoundTripTime",
		dc.MessageTypeJitter:        "MessageTypeJitter",
		dc.MessageTypeLock:          "MessageTypeLock",
		dc.MessageTypeUnlock:        "MessageTypeUnlock",
		dc.MessageTypeMediaMap:      "MessageTypeMediaMap",
	}
	return names[mt]
}
