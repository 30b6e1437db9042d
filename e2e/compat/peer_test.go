package compat

import (
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mattermost/rtcd/service/rtc"
	"github.com/mattermost/rtcd/service/rtc/dc"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/transport/v4"
	"github.com/pion/webrtc/v4"
)

const (
	audioLevelURI  = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"
	opusPT         = 111
	rtpInterval    = 20 * time.Millisecond
	rtpPayloadSize = 100
)

var opusCodec = webrtc.RTPCodecCapability{
	MimeType:    webrtc.MimeTypeOpus,
	ClockRate:   48000,
	Channels:    2,
	SDPFmtpLine: "minptime=10;useinbandfec=1",
}

// remoteTrackInfo is what a peer learned about a track rtcd forwarded to it.
type remoteTrackInfo struct {
	ID, StreamID, MimeType string
	PayloadType            uint8
}

type dcMessage struct {
	text    bool
	raw     []byte
	msgType dc.MessageType
	payload any
}

// peer is one end user (a Calls webapp session) backed by a pion
// PeerConnection restricted to loopback.
type peer struct {
	h         *harness
	name      string
	tag       byte // first payload byte of every RTP packet this peer sends
	sessionID string
	userID    string
	speaking  bool // whether the audio-level extension varies (drives rtcd's VAD)
	// anyOpus counts every received Opus packet in recv, whatever its size
	// and first byte (packets from a browser, not from another pion peer),
	// except an echo of this peer's own packets.
	anyOpus bool

	// dcSignaling is sent in the join. When set, SDP offers that arrive over
	// the DataChannel are answered over the DataChannel (as the webapp and the
	// Go rtcd client do once "calls-dc" is open).
	dcSignaling bool
	// holdOffers makes the signaling loop park server offers that arrive over
	// the WS in heldCh instead of answering them (glare tests).
	holdOffers atomic.Bool

	pc     *webrtc.PeerConnection
	dc     *webrtc.DataChannel
	track  *webrtc.TrackLocalStaticRTP
	sender *webrtc.RTPSender

	sigCh       chan rtc.Message
	dcSDPCh     chan []byte       // JSON SessionDescriptions received over the DC
	opCh        chan func() error // work run on the signaling goroutine
	heldCh      chan webrtc.SessionDescription
	connectedCh chan struct{}
	dcOpenCh    chan struct{}
	dcMsgCh     chan dcMessage
	tracksCh    chan remoteTrackInfo
	stopCh      chan struct{}
	closeOnce   sync.Once
	connOnce    sync.Once
	sendOnce    sync.Once

	mu           sync.Mutex
	offerSent    bool
	localCands   []webrtc.ICECandidateInit
	remoteCands  []webrtc.ICECandidateInit
	mediaMaps    []dc.MediaMap
	answersRecvd int
	offersRecvd  int
	candsRecvd   int
	candShapes   []string
	dcOpened     bool
	wsOffersDC   int // WS offers received after the DC opened
	dcOffers     int // server offers received over the DC
	dcAnswers    int // answers received over the DC
	events       []string

	sent      atomic.Int64
	recv      atomic.Int64
	recvOther atomic.Int64 // packets whose PT or tag was unexpected
	// recvByTag counts the packets counted in recv by their first payload
	// byte, i.e. by the sending peer's tag.
	recvByTag [256]atomic.Int64

	// Server offers: when the oldest unanswered one arrived (zero when all
	// are answered) and how many answers this peer sent to them.
	offerPendingSince time.Time
	offerAnswersSent  int
	// rx is what arrived per forwarded track (keyed by the track's SSRC):
	// header SSRCs, payload types, first payload bytes.
	rx map[uint32]*rxTrackStat
}

// rxTrackStat records every RTP packet read from one forwarded track.
type rxTrackStat struct {
	trackID, streamID string
	ssrc              uint32
	packets           int64
	headerSSRCs       map[uint32]int64
	pts               map[uint8]int64
	sizes             map[int]int64
	tags              map[byte]int64
}

func (r *rxTrackStat) String() string {
	return fmt.Sprintf("track{id=%s stream=%s ssrc=%d packets=%d headerSSRCs=%v pts=%v sizes=%v tags=%s}",
		r.trackID, r.streamID, r.ssrc, r.packets, r.headerSSRCs, r.pts, r.sizes, tagCounts(r.tags))
}

func tagCounts(m map[byte]int64) string {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, int(k))
	}
	sort.Ints(keys)
	var sb strings.Builder
	sb.WriteString("{")
	for i, k := range keys {
		if i > 0 {
			sb.WriteString(" ")
		}
		if k >= 0x21 && k < 0x7f {
			fmt.Fprintf(&sb, "%c:%d", k, m[byte(k)])
		} else {
			fmt.Fprintf(&sb, "0x%02x:%d", k, m[byte(k)])
		}
	}
	sb.WriteString("}")
	return sb.String()
}

// peerOptions are optional hooks for newPeerWith.
type peerOptions struct {
	// loggerFactory replaces pion's default logger factory.
	loggerFactory logging.LoggerFactory
	// wrapTrack, if set, wraps the peer's Opus track before it is added to
	// the PeerConnection (p.track stays the TrackLocalStaticRTP that
	// startRTP writes to).
	wrapTrack func(*webrtc.TrackLocalStaticRTP) webrtc.TrackLocal
	// net replaces pion's network (sockets) for the peer.
	net transport.Net
	// tcpOnly restricts ICE to TCP (active candidates that connect to the server's passive
	// ICE-TCP ones).
	tcpOnly bool
}

func newPeer(h *harness, name string, tag byte, speaking bool) (*peer, error) {
	return newPeerWith(h, name, tag, speaking, peerOptions{})
}

func newPeerWith(h *harness, name string, tag byte, speaking bool, opts peerOptions) (*peer, error) {
	p := &peer{
		rx:          map[uint32]*rxTrackStat{},
		h:           h,
		name:        name,
		tag:         tag,
		sessionID:   newID(),
		userID:      newID(),
		speaking:    speaking,
		sigCh:       make(chan rtc.Message, 512),
		dcSDPCh:     make(chan []byte, 64),
		opCh:        make(chan func() error),
		heldCh:      make(chan webrtc.SessionDescription, 16),
		connectedCh: make(chan struct{}),
		dcOpenCh:    make(chan struct{}),
		dcMsgCh:     make(chan dcMessage, 256),
		tracksCh:    make(chan remoteTrackInfo, 16),
		stopCh:      make(chan struct{}),
	}

	var m webrtc.MediaEngine
	if err := m.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: opusCodec, PayloadType: opusPT}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	// Browsers offer the RFC 6464 audio level extension; rtcd's VAD needs it.
	if err := m.RegisterHeaderExtension(webrtc.RTPHeaderExtensionCapability{URI: audioLevelURI}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	var reg interceptor.Registry
	if err := webrtc.RegisterDefaultInterceptors(&m, &reg); err != nil {
		return nil, err
	}

	var se webrtc.SettingEngine
	se.SetIncludeLoopbackCandidate(true)
	se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4, webrtc.NetworkTypeTCP4})
	if opts.tcpOnly {
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeTCP4})
	}
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetIPFilter(func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) })
	if opts.loggerFactory != nil {
		se.LoggerFactory = opts.loggerFactory
	}
	if opts.net != nil {
		se.SetNet(opts.net)
	}

	api := webrtc.NewAPI(webrtc.WithMediaEngine(&m), webrtc.WithSettingEngine(se), webrtc.WithInterceptorRegistry(&reg))
	pc, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		return nil, err
	}
	p.pc = pc

	// Like the Calls webapp (calls-common RTCPeer): DataChannel first.
	p.dc, err = pc.CreateDataChannel("calls-dc", nil)
	if err != nil {
		return nil, err
	}
	p.dc.OnOpen(func() {
		p.mu.Lock()
		p.dcOpened = true
		p.events = append(p.events, "dc:open")
		p.mu.Unlock()
		close(p.dcOpenCh)
	})
	p.dc.OnMessage(p.onDCMessage)

	p.track, err = webrtc.NewTrackLocalStaticRTP(opusCodec, "audio-"+p.name, "stream-"+p.name)
	if err != nil {
		return nil, err
	}
	var local webrtc.TrackLocal = p.track
	if opts.wrapTrack != nil {
		local = opts.wrapTrack(p.track)
	}
	tr, err := pc.AddTransceiverFromTrack(local, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
	if err != nil {
		return nil, err
	}
	p.sender = tr.Sender()
	go func() {
		// Drain RTCP so the interceptors keep working.
		buf := make([]byte, 1500)
		for {
			if _, _, err := p.sender.Read(buf); err != nil {
				return
			}
		}
	}()

	pc.OnICECandidate(p.onICECandidate)
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		if st == webrtc.PeerConnectionStateConnected {
			p.connOnce.Do(func() { close(p.connectedCh) })
		}
		if st == webrtc.PeerConnectionStateFailed {
			h.fail("%s: peer connection failed", p.name)
		}
	})
	pc.OnTrack(p.onTrack)

	h.addPeer(p)
	go p.signalingLoop()
	return p, nil
}

func (p *peer) deliver(msg rtc.Message) {
	select {
	case p.sigCh <- msg:
	default:
		p.h.fail("%s: signaling queue full", p.name)
	}
}

func (p *peer) close() {
	p.closeOnce.Do(func() {
		close(p.stopCh)
		_ = p.pc.Close()
	})
}

// joinMsg is the join payload exactly as the Calls plugin builds it.
func (p *peer) joinMsg(callID, channelID string) map[string]any {
	return map[string]any{
		"callID":      callID,
		"userID":      p.userID,
		"sessionID":   p.sessionID,
		"channelID":   channelID,
		"av1Support":  false,
		"dcSignaling": p.dcSignaling,
	}
}

// offer creates the initial offer and sends it as an rtc SDP message
// (type 2, JSON {"type":"offer","sdp":...}, uncompressed, as the plugin
// relays it after inflating the browser's zlib payload).
func (p *peer) offer() error {
	offer, err := p.pc.CreateOffer(nil)
	if err != nil {
		return fmt.Errorf("CreateOffer: %w", err)
	}
	if err := p.pc.SetLocalDescription(offer); err != nil {
		return fmt.Errorf("SetLocalDescription(offer): %w", err)
	}
	if err := p.sendSDP(*p.pc.LocalDescription()); err != nil {
		return err
	}
	// Candidates gathered before the offer went out are trickled after it,
	// as a browser would.
	p.mu.Lock()
	p.offerSent = true
	pending := p.localCands
	p.localCands = nil
	p.mu.Unlock()
	for _, c := range pending {
		if err := p.sendCandidate(c); err != nil {
			return err
		}
	}
	return nil
}

func (p *peer) sendSDP(sd webrtc.SessionDescription) error {
	data, err := json.Marshal(sd)
	if err != nil {
		return err
	}
	return p.h.sendRTC(rtc.Message{SessionID: p.sessionID, Type: rtc.SDPMessage, Data: data})
}

func (p *peer) sendCandidate(c webrtc.ICECandidateInit) error {
	data, err := json.Marshal(c)
	if err != nil {
		return err
	}
	return p.h.sendRTC(rtc.Message{SessionID: p.sessionID, Type: rtc.ICEMessage, Data: data})
}

func (p *peer) onICECandidate(c *webrtc.ICECandidate) {
	if c == nil {
		return
	}
	init := c.ToJSON()
	p.mu.Lock()
	if !p.offerSent {
		p.localCands = append(p.localCands, init)
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	if err := p.sendCandidate(init); err != nil {
		p.h.fail("%s: sending ICE candidate: %v", p.name, err)
	}
}

func (p *peer) signalingLoop() {
	// An error after the test closed this peer (an offer being answered while close() runs
	// on the test's goroutine: "InvalidStateError: connection closed") is not the server's.
	report := func(format string, args ...any) {
		if !p.stopped() {
			p.h.fail(format, args...)
		}
	}
	for {
		select {
		case <-p.stopCh:
			return
		case msg := <-p.sigCh:
			if err := p.handleSignal(msg); err != nil {
				report("%s: %v", p.name, err)
			}
		case data := <-p.dcSDPCh:
			var sd webrtc.SessionDescription
			if err := json.Unmarshal(data, &sd); err != nil {
				report("%s: DC SDP payload is not a JSON SessionDescription: %v (%q)", p.name, err, data)
				continue
			}
			if err := p.handleSDP(sd, true); err != nil {
				report("%s: %v", p.name, err)
			}
		case op := <-p.opCh:
			if err := op(); err != nil {
				report("%s: %v", p.name, err)
			}
		}
	}
}

// stopped reports whether close() has been called.
func (p *peer) stopped() bool {
	select {
	case <-p.stopCh:
		return true
	default:
		return false
	}
}

func (p *peer) handleSignal(msg rtc.Message) error {
	switch msg.Type {
	case rtc.SDPMessage:
		var sd webrtc.SessionDescription
		if err := json.Unmarshal(msg.Data, &sd); err != nil {
			return fmt.Errorf("SDP message data is not a JSON SessionDescription: %v (%q)", err, msg.Data)
		}
		return p.handleSDP(sd, false)
	case rtc.ICEMessage:
		// rtcd's outbound candidate shape: {"type":"candidate","candidate":RTCIceCandidateInit}
		var wrapped struct {
			Type      string                   `json:"type"`
			Candidate *webrtc.ICECandidateInit `json:"candidate"`
		}
		if err := json.Unmarshal(msg.Data, &wrapped); err != nil {
			return fmt.Errorf("ICE message data is not JSON: %v (%q)", err, msg.Data)
		}
		if wrapped.Type != "candidate" || wrapped.Candidate == nil || wrapped.Candidate.Candidate == "" {
			return fmt.Errorf(`ICE message data %q is not {"type":"candidate","candidate":{...}}`, msg.Data)
		}
		var keys map[string]json.RawMessage
		if err := json.Unmarshal(msg.Data, &keys); err != nil || len(keys) != 2 {
			return fmt.Errorf(`ICE message data %q must have exactly the keys "type" and "candidate"`, msg.Data)
		}
		p.mu.Lock()
		p.candsRecvd++
		if len(p.candShapes) == 0 {
			p.candShapes = append(p.candShapes, string(msg.Data))
		}
		p.remoteCands = append(p.remoteCands, *wrapped.Candidate)
		p.mu.Unlock()
		return p.flushRemoteCandidates()
	default:
		return fmt.Errorf("unexpected rtc message type %d from server (data %q)", msg.Type, msg.Data)
	}
}

// handleSDP applies an SDP from the server, received over the WS or (viaDC)
// over the DataChannel. Answers go back the way the offer came, like the
// webapp and the Go rtcd client (DC when dcSignaling is on and it is open).
func (p *peer) handleSDP(sd webrtc.SessionDescription, viaDC bool) error {
	via := "ws"
	if viaDC {
		via = "dc"
	}
	switch sd.Type {
	case webrtc.SDPTypeAnswer:
		if err := p.pc.SetRemoteDescription(sd); err != nil {
			p.logEvent(via + ":answer(rejected)")
			return fmt.Errorf("SetRemoteDescription(answer over %s): %w", via, err)
		}
		p.mu.Lock()
		if viaDC {
			p.dcAnswers++
		} else {
			p.answersRecvd++
		}
		p.events = append(p.events, via+":answer")
		p.mu.Unlock()
	case webrtc.SDPTypeOffer:
		p.mu.Lock()
		if viaDC {
			p.dcOffers++
		} else {
			p.offersRecvd++
			if p.dcOpened {
				p.wsOffersDC++
			}
		}
		held := !viaDC && p.holdOffers.Load()
		if p.offerPendingSince.IsZero() {
			p.offerPendingSince = time.Now()
		}
		if held {
			p.events = append(p.events, via+":offer(held)")
		} else {
			p.events = append(p.events, via+":offer")
		}
		p.mu.Unlock()
		if held {
			select {
			case p.heldCh <- sd:
				return nil
			default:
				return fmt.Errorf("held offers queue full")
			}
		}
		// Server-initiated renegotiation (rtcd adds/removes a forwarded
		// track): answer it like the webapp does.
		if err := p.answerOffer(sd, viaDC); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unexpected SDP type %q from server over %s", sd.Type, via)
	}
	return p.flushRemoteCandidates()
}

// answerOffer applies a server offer and sends the answer over the DC
// (viaDC) or the WS.
func (p *peer) answerOffer(sd webrtc.SessionDescription, viaDC bool) error {
	if err := p.pc.SetRemoteDescription(sd); err != nil {
		return fmt.Errorf("SetRemoteDescription(server offer): %w", err)
	}
	answer, err := p.pc.CreateAnswer(nil)
	if err != nil {
		return fmt.Errorf("CreateAnswer: %w", err)
	}
	if err := p.pc.SetLocalDescription(answer); err != nil {
		return fmt.Errorf("SetLocalDescription(answer): %w", err)
	}
	if viaDC {
		err = p.sendDCSDP(*p.pc.LocalDescription())
	} else {
		err = p.sendSDP(*p.pc.LocalDescription())
	}
	if err != nil {
		return fmt.Errorf("sending answer: %w", err)
	}
	p.mu.Lock()
	p.offerAnswersSent++
	p.offerPendingSince = time.Time{}
	p.mu.Unlock()
	return nil
}

// unansweredOffer reports since when a server offer has been waiting for
// this peer's answer (zero if none).
func (p *peer) unansweredOffer() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.offerPendingSince
}

// sendDCSDP sends a SessionDescription over the DataChannel: DC type 3 with
// a msgpack bin payload holding zlib-compressed JSON.
func (p *peer) sendDCSDP(sd webrtc.SessionDescription) error {
	data, err := json.Marshal(sd)
	if err != nil {
		return err
	}
	msg, err := dc.EncodeMessage(dc.MessageTypeSDP, data)
	if err != nil {
		return err
	}
	return p.dc.Send(msg)
}

// do runs fn on the signaling goroutine (so it never races with handling of
// server SDP) and returns its error.
func (p *peer) do(timeout time.Duration, fn func() error) error {
	errCh := make(chan error, 1)
	op := func() error { errCh <- fn(); return nil }
	select {
	case p.opCh <- op:
	case <-time.After(timeout):
		return fmt.Errorf("%s: signaling goroutine busy for %s", p.name, timeout)
	}
	select {
	case err := <-errCh:
		return err
	case <-time.After(timeout):
		return fmt.Errorf("%s: operation did not finish within %s", p.name, timeout)
	}
}

func (p *peer) logEvent(ev string) {
	p.mu.Lock()
	p.events = append(p.events, ev)
	p.mu.Unlock()
}

func (p *peer) getEvents() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.events...)
}

// flushRemoteCandidates adds queued remote candidates once a remote
// description is set (rtcd may trickle candidates before its answer).
func (p *peer) flushRemoteCandidates() error {
	if p.pc.RemoteDescription() == nil {
		return nil
	}
	p.mu.Lock()
	cands := p.remoteCands
	p.remoteCands = nil
	p.mu.Unlock()
	for _, c := range cands {
		if err := p.pc.AddICECandidate(c); err != nil {
			return fmt.Errorf("AddICECandidate(%q): %w", c.Candidate, err)
		}
	}
	return nil
}

func (p *peer) onTrack(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
	info := remoteTrackInfo{ID: tr.ID(), StreamID: tr.StreamID(), MimeType: tr.Codec().MimeType, PayloadType: uint8(tr.PayloadType())}
	select {
	case p.tracksCh <- info:
	default:
	}
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			return
		}
		p.noteRx(tr, pkt)
		if p.anyOpus && pkt.PayloadType == opusPT && len(pkt.Payload) > 0 &&
			(len(pkt.Payload) != rtpPayloadSize || pkt.Payload[0] != p.tag) {
			p.recv.Add(1)
			continue
		}
		if pkt.PayloadType != opusPT || len(pkt.Payload) != rtpPayloadSize || pkt.Payload[0] == p.tag {
			p.recvOther.Add(1)
			continue
		}
		p.recv.Add(1)
		p.recvByTag[pkt.Payload[0]].Add(1)
	}
}

func (p *peer) noteRx(tr *webrtc.TrackRemote, pkt *rtp.Packet) {
	ssrc := uint32(tr.SSRC())
	p.mu.Lock()
	defer p.mu.Unlock()
	st := p.rx[ssrc]
	if st == nil {
		st = &rxTrackStat{trackID: tr.ID(), streamID: tr.StreamID(), ssrc: ssrc,
			headerSSRCs: map[uint32]int64{}, pts: map[uint8]int64{}, sizes: map[int]int64{}, tags: map[byte]int64{}}
		p.rx[ssrc] = st
	}
	st.packets++
	st.headerSSRCs[pkt.SSRC]++
	st.pts[pkt.PayloadType]++
	st.sizes[len(pkt.Payload)]++
	if len(pkt.Payload) > 0 {
		st.tags[pkt.Payload[0]]++
	}
}

// rxStats returns a snapshot of what arrived per forwarded track.
func (p *peer) rxStats() []rxTrackStat {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]rxTrackStat, 0, len(p.rx))
	for _, st := range p.rx {
		c := *st
		c.headerSSRCs = maps.Clone(st.headerSSRCs)
		c.pts = maps.Clone(st.pts)
		c.sizes = maps.Clone(st.sizes)
		c.tags = maps.Clone(st.tags)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ssrc < out[j].ssrc })
	return out
}

func (p *peer) onDCMessage(m webrtc.DataChannelMessage) {
	msg := dcMessage{text: m.IsString, raw: append([]byte(nil), m.Data...)}
	if !m.IsString {
		t, payload, err := dc.DecodeMessage(m.Data)
		if err != nil {
			p.h.fail("%s: undecodable DC message %x: %v", p.name, m.Data, err)
			return
		}
		msg.msgType, msg.payload = t, payload
		if t == dc.MessageTypeMediaMap {
			mm, _ := payload.(dc.MediaMap)
			p.mu.Lock()
			p.mediaMaps = append(p.mediaMaps, mm)
			p.events = append(p.events, "dc:mediamap"+mediaMapString(mm))
			p.mu.Unlock()
			return
		}
		if t == dc.MessageTypeSDP {
			data, _ := payload.([]byte)
			p.logEvent("dc:sdp-received")
			select {
			case p.dcSDPCh <- data:
			default:
				p.h.fail("%s: DC SDP queue full", p.name)
			}
			return
		}
		if t == dc.MessageTypeLock {
			p.logEvent(fmt.Sprintf("dc:lock(%v)", payload))
		}
	}
	select {
	case p.dcMsgCh <- msg:
	default:
	}
}

func mediaMapString(mm dc.MediaMap) string {
	mids := make([]string, 0, len(mm))
	for mid := range mm {
		mids = append(mids, mid)
	}
	sort.Strings(mids)
	var sb strings.Builder
	sb.WriteString("{")
	for i, mid := range mids {
		if i > 0 {
			sb.WriteString(" ")
		}
		fmt.Fprintf(&sb, "%s:%s/%s", mid, mm[mid].Type, mm[mid].SenderID)
	}
	sb.WriteString("}")
	return sb.String()
}

// waitDC waits for a DC message matching pred.
func (p *peer) waitDC(timeout time.Duration, pred func(dcMessage) bool) (dcMessage, error) {
	deadline := time.After(timeout)
	for {
		select {
		case m := <-p.dcMsgCh:
			if pred(m) {
				return m, nil
			}
		case <-deadline:
			return dcMessage{}, fmt.Errorf("%s: no matching DC message within %s", p.name, timeout)
		}
	}
}

// startRTP sends Opus-shaped RTP (PT 111, 20 ms cadence, 100-byte dummy
// payloads, incrementing seq/timestamp) until the peer is closed. A speaking
// peer varies the audio level (0/-dBov alternating between 10 and 90) so
// rtcd's VAD reports voice; a silent one sends a constant 127 (silence).
func (p *peer) startRTP() {
	p.sendOnce.Do(func() { go p.rtpLoop() })
}

func (p *peer) rtpLoop() {
	var extID uint8
	for _, ext := range p.sender.GetParameters().HeaderExtensions {
		if ext.URI == audioLevelURI {
			extID = uint8(ext.ID)
		}
	}
	if extID == 0 {
		p.h.fail("%s: audio level extension was not negotiated", p.name)
	}
	ticker := time.NewTicker(rtpInterval)
	defer ticker.Stop()
	seq := uint16(1000)
	ts := uint32(48000)
	for i := 0; ; i++ {
		select {
		case <-p.stopCh:
			return
		case <-ticker.C:
		}
		payload := make([]byte, rtpPayloadSize)
		payload[0] = p.tag
		for j := 1; j < len(payload); j++ {
			payload[j] = byte(i + j)
		}
		pkt := &rtp.Packet{
			Header: rtp.Header{
				Version:        2,
				PayloadType:    opusPT,
				SequenceNumber: seq,
				Timestamp:      ts,
			},
			Payload: payload,
		}
		if extID != 0 {
			level := uint8(127)
			if p.speaking {
				level = 10
				if i%2 == 1 {
					level = 90
				}
			}
			ext, err := (&rtp.AudioLevelExtension{Level: level, Voice: p.speaking}).Marshal()
			if err == nil {
				_ = pkt.Header.SetExtension(extID, ext)
			}
		}
		if err := p.track.WriteRTP(pkt); err == nil {
			p.sent.Add(1)
		}
		seq++
		ts += 960
	}
}

func (p *peer) counts() (answers, offers, cands int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.answersRecvd, p.offersRecvd, p.candsRecvd
}

func (p *peer) getMediaMaps() []dc.MediaMap {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]dc.MediaMap(nil), p.mediaMaps...)
}

func (p *peer) String() string {
	a, o, c := p.counts()
	p.mu.Lock()
	dcO, dcA := p.dcOffers, p.dcAnswers
	p.mu.Unlock()
	return fmt.Sprintf("%s{session=%s sent=%d recv=%d other=%d answers=%d serverOffers=%d dcOffers=%d dcAnswers=%d cands=%d state=%s}",
		p.name, p.sessionID, p.sent.Load(), p.recv.Load(), p.recvOther.Load(), a, o, dcO, dcA, c, p.pc.ConnectionState())
}

// addSilentAudioTrack adds a second sendrecv Opus transceiver that never sends RTP
// (rtcd would take RTP on it as the session's new voice track) and drains its
// sender's RTCP. Call it on the peer's signaling goroutine.
func (p *peer) addSilentAudioTrack(trackID, streamID string) (*webrtc.RTPTransceiver, error) {
	track, err := webrtc.NewTrackLocalStaticRTP(opusCodec, trackID, streamID)
	if err != nil {
		return nil, err
	}
	tr, err := p.pc.AddTransceiverFromTrack(track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
	if err != nil {
		return nil, fmt.Errorf("AddTransceiverFromTrack: %w", err)
	}
	go func() {
		buf := make([]byte, 1500)
		for {
			if _, _, err := tr.Sender().Read(buf); err != nil {
				return
			}
		}
	}()
	return tr, nil
}
