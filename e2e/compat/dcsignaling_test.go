package compat

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc/dc"
	"github.com/pion/webrtc/v4"
)

// Bounds used by TestCallDCSignaling.
const (
	dcLockRetry       = 100 * time.Millisecond // as the webapp / Go rtcd client
	dcLockTimeout     = 5 * time.Second
	dcAnswerTimeout   = 5 * time.Second
	heldOfferTimeout  = 5 * time.Second
	droppedOfferGrace = 2 * time.Second // how long an answer to the dropped offer is waited for
)

// TestCallDCSignaling covers signaling over the DataChannel (join with
// dcSignaling: true) as the webapp and the Go rtcd client do it, and what
// rtcd does with a client offer that arrives while its own offer is
// outstanding (dcSignaling: false, offer over the WS).
//
// Every observation is logged as a "DCSIG" line (grep 'DCSIG' test.log) so
// two servers can be compared.
func TestCallDCSignaling(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	if env.skip["dc"] {
		t.Skip("COMPAT_SKIP contains dc")
	}
	h := newHarness(t, env)
	logf := func(format string, args ...any) { t.Logf("DCSIG "+format, args...) }

	step(t, "connect_hello", h, func(t *testing.T) { h.waitHello(t) })

	// ---- Part 1: two sessions with dcSignaling: true. ----
	callID, channelID := newID(), newID()
	var a, b *peer
	joinDC := func(t *testing.T, pp **peer, name string) {
		p, err := newPeer(h, name, name[0], false)
		if err != nil {
			t.Fatalf("newPeer(%s): %v", name, err)
		}
		p.dcSignaling = true
		*pp = p
		// The initial offer still goes over the WS: the DC is not open yet.
		joinAndConnect(t, h, p, callID, channelID)
		waitFor(t, name+": the answer to the initial offer over the WS", 2*time.Second, func() bool {
			answers, _, _ := p.counts()
			return answers >= 1
		})
		p.mu.Lock()
		answers, dcAnswers, cands := p.answersRecvd, p.dcAnswers, p.candsRecvd
		p.mu.Unlock()
		if answers != 1 || dcAnswers != 0 || cands == 0 {
			t.Fatalf("%s: initial offer (WS) got %d WS answers, %d DC answers and %d WS candidates; want 1 WS answer, no DC answer and some candidates",
				name, answers, dcAnswers, cands)
		}
		logf("%s joined (dcSignaling=true): initial answer over WS; events %v", name, p.getEvents())
	}
	step(t, "join_A_dc", h, func(t *testing.T) { joinDC(t, &a, "A") })
	step(t, "join_B_dc", h, func(t *testing.T) { joinDC(t, &b, "B") })

	step(t, "server_offers_over_dc", h, func(t *testing.T) {
		waitFor(t, "A and B to each receive >= 50 RTP packets and a server offer over the DC", mediaTimeout, func() bool {
			a.mu.Lock()
			ao := a.dcOffers
			a.mu.Unlock()
			b.mu.Lock()
			bo := b.dcOffers
			b.mu.Unlock()
			return a.recv.Load() >= 50 && b.recv.Load() >= 50 && ao >= 1 && bo >= 1
		})
		for _, pair := range [][2]*peer{{a, b}, {b, a}} {
			rx, tx := pair[0], pair[1]
			rx.mu.Lock()
			wsOffers, wsAfterDC, dcOffers, dcAnswers := rx.offersRecvd, rx.wsOffersDC, rx.dcOffers, rx.dcAnswers
			rx.mu.Unlock()
			events := rx.getEvents()
			logf("%s: server offers over DC=%d, over WS=%d (after DC open: %d); events %v", rx.name, dcOffers, wsOffers, wsAfterDC, events)
			if wsAfterDC != 0 {
				t.Errorf("%s: %d server offers arrived over the WS after the DC opened; with dcSignaling they must go over the DC", rx.name, wsAfterDC)
			}
			if wsOffers != 0 {
				// rtcd makes no server offer before the DC is open
				// (handleTracks waits for it).
				t.Errorf("%s: %d server offers arrived over the WS; rtcd sends them all over the DC once it is open", rx.name, wsOffers)
			}
			if dcAnswers != 0 {
				t.Errorf("%s: %d unsolicited answers over the DC", rx.name, dcAnswers)
			}
			// A MediaMap with a voice entry accompanies the DC offers. rtcd queues the MediaMap
			// and the offer on two channels that one select drains, so either may go first
			// (service/rtc/dc.go); ours always sends the MediaMap first. Require one at all.
			mmSeen, sawOffer := false, false
			for _, ev := range events {
				if ev == "dc:sdp-received" {
					sawOffer = true
				}
				if strings.HasPrefix(ev, "dc:mediamap") && strings.Contains(ev, ":voice/") {
					mmSeen = true
				}
			}
			if !sawOffer {
				t.Errorf("%s: no SDP received over the DC", rx.name)
			} else if !mmSeen {
				t.Errorf("%s: no DC MediaMap with a voice entry alongside the DC offers (events %v)", rx.name, events)
			}
			for _, mm := range rx.getMediaMaps() {
				logf("%s: MediaMap %s (receiver session %s, sender session %s)", rx.name, mediaMapString(mm), rx.sessionID, tx.sessionID)
			}
			select {
			case ti := <-rx.tracksCh:
				if ti.StreamID != tx.sessionID || !strings.HasPrefix(ti.ID, "voice_"+tx.sessionID+"_") {
					t.Errorf("%s: forwarded track id=%q stream=%q, want voice_%s_* / %s", rx.name, ti.ID, ti.StreamID, tx.sessionID, tx.sessionID)
				}
			default:
				t.Errorf("%s: no OnTrack recorded", rx.name)
			}
			if n := rx.recvOther.Load(); n != 0 {
				t.Errorf("%s: %d packets with wrong PT/size or its own tag", rx.name, n)
			}
		}
		logf("%s / %s", a, b)
	})

	step(t, "client_offer_under_lock", h, func(t *testing.T) {
		// Take the DC signaling lock: Lock, wait for Lock(bool), retry every
		// 100 ms, give up after 5 s.
		var replies []bool
		deadline := time.Now().Add(dcLockTimeout)
		lockMsg, _ := dc.EncodeMessage(dc.MessageTypeLock, nil)
		for {
			if err := a.dc.Send(lockMsg); err != nil {
				t.Fatalf("DC send Lock: %v", err)
			}
			m, err := a.waitDC(time.Until(deadline)+time.Second, func(m dcMessage) bool { return !m.text && m.msgType == dc.MessageTypeLock })
			if err != nil {
				t.Fatalf("DC Lock: no reply (replies so far %v): %v", replies, err)
			}
			got, ok := m.payload.(bool)
			if !ok {
				t.Fatalf("DC Lock reply %x has no bool payload", m.raw)
			}
			replies = append(replies, got)
			if got {
				if want, _ := dc.EncodeMessage(dc.MessageTypeLock, true); !bytes.Equal(m.raw, want) {
					t.Errorf("DC Lock(true) bytes %x, want %x", m.raw, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("DC Lock not granted within %s (replies %v)", dcLockTimeout, replies)
			}
			time.Sleep(dcLockRetry)
		}
		logf("A: Lock replies %v", replies)

		a.mu.Lock()
		ws0, dcAns0, dcOff0, wsOff0 := a.answersRecvd, a.dcAnswers, a.dcOffers, a.offersRecvd
		a.mu.Unlock()

		// Add a second audio track and offer over the DC. It sends no RTP
		// (rtcd would take it as the session's new voice track).
		var newMid string
		var offerMLines int
		err := a.do(5*time.Second, func() error {
			tr, err := a.addSilentAudioTrack("audio2-A", "stream2-A")
			if err != nil {
				return err
			}
			offer, err := a.pc.CreateOffer(nil)
			if err != nil {
				return fmt.Errorf("CreateOffer: %w", err)
			}
			if err := a.pc.SetLocalDescription(offer); err != nil {
				return fmt.Errorf("SetLocalDescription(offer): %w", err)
			}
			newMid = tr.Mid()
			offerMLines = strings.Count(offer.SDP, "\nm=")
			a.logEvent("client:offer-sent-over-dc")
			return a.sendDCSDP(*a.pc.LocalDescription())
		})
		if err != nil {
			t.Fatalf("A: client offer: %v", err)
		}
		waitFor(t, "A: the answer to its offer over the DC", dcAnswerTimeout, func() bool {
			a.mu.Lock()
			defer a.mu.Unlock()
			return a.dcAnswers > dcAns0 || a.answersRecvd > ws0
		})
		unlock, _ := dc.EncodeMessage(dc.MessageTypeUnlock, nil)
		if err := a.dc.Send(unlock); err != nil {
			t.Fatalf("DC send Unlock: %v", err)
		}
		a.mu.Lock()
		ws1, dcAns1, dcOff1, wsOff1 := a.answersRecvd, a.dcAnswers, a.dcOffers, a.offersRecvd
		a.mu.Unlock()
		if ws1 != ws0 {
			t.Errorf("A: the answer to a client offer sent over the DC came over the WS")
		}
		if dcAns1 != dcAns0+1 {
			t.Errorf("A: %d answers over the DC, want 1", dcAns1-dcAns0)
		}
		if dcOff1 != dcOff0 || wsOff1 != wsOff0 {
			t.Errorf("A: server offered while A held the lock (DC %d, WS %d)", dcOff1-dcOff0, wsOff1-wsOff0)
		}
		if st := a.pc.SignalingState(); st != webrtc.SignalingStateStable {
			t.Errorf("A: signaling state %s after the answer, want stable", st)
		}
		rd := a.pc.CurrentRemoteDescription()
		if rd == nil || newMid == "" || !strings.Contains(rd.SDP, "a=mid:"+newMid+"\r\n") {
			t.Errorf("A: the answer does not carry the new m-line (mid %q)", newMid)
		} else {
			logf("A: client offer (%d m-lines, new mid %s) over DC answered over DC with %d m-lines", offerMLines, newMid, strings.Count(rd.SDP, "\nm="))
		}

		// The lock is free again after Unlock.
		if err := a.dc.Send(lockMsg); err != nil {
			t.Fatalf("DC send Lock: %v", err)
		}
		m, err := a.waitDC(2*time.Second, func(m dcMessage) bool { return !m.text && m.msgType == dc.MessageTypeLock })
		if err != nil || m.payload != true {
			t.Fatalf("DC Lock after Unlock = %v, %v; want Lock(true)", m.payload, err)
		}
		if err := a.dc.Send(unlock); err != nil {
			t.Fatalf("DC send Unlock: %v", err)
		}

		checkMedia(t, []*peer{a, b})
		logf("A: events %v", a.getEvents())
		logf("%s / %s", a, b)
	})

	// leavePair makes first leave, records what the server then signals to
	// second (rtcd detaches a departed session's voice track without
	// renegotiating), and makes second leave.
	leavePair := func(t *testing.T, first, second *peer) {
		second.mu.Lock()
		ws0, dc0 := second.offersRecvd, second.dcOffers
		second.mu.Unlock()
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": first.sessionID})
		h.waitClose(t, first.sessionID, closeTimeout)
		first.close()
		// Let any renegotiation the server starts finish before second
		// leaves, so its answer does not race the close.
		time.Sleep(time.Second)
		second.mu.Lock()
		ws1, dc1 := second.offersRecvd, second.dcOffers
		second.mu.Unlock()
		logf("%s left: server offers to %s within 1s: %d over WS, %d over DC (rtcd: none for a voice track)", first.name, second.name, ws1-ws0, dc1-dc0)
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": second.sessionID})
		h.waitClose(t, second.sessionID, closeTimeout)
		second.close()
	}
	step(t, "leave_A_B", h, func(t *testing.T) { leavePair(t, a, b) })

	// ---- Part 2: a client offer (WS, dcSignaling: false) while a server
	// offer to the same session is outstanding. rtcd drops it silently
	// (session.signaling: makingOffer or not stable). ----
	call2, channel2 := newID(), newID()
	var y, z *peer
	noClose := func(t *testing.T) {
		t.Helper()
		for {
			select {
			case data := <-h.closeCh:
				if data["sessionID"] == y.sessionID || data["sessionID"] == z.sessionID {
					t.Fatalf("server closed session %s", data["sessionID"])
				}
				t.Logf("close for other session %v", data)
			default:
				return
			}
		}
	}

	step(t, "join_Y", h, func(t *testing.T) {
		var err error
		if y, err = newPeer(h, "Y", 'Y', false); err != nil {
			t.Fatalf("newPeer(Y): %v", err)
		}
		joinAndConnect(t, h, y, call2, channel2)
	})

	var held webrtc.SessionDescription
	step(t, "server_offer_outstanding", h, func(t *testing.T) {
		// Y parks server offers; Z joins and publishes, so rtcd offers Y
		// Z's voice track and waits (up to 10 s) for the answer.
		y.holdOffers.Store(true)
		var err error
		if z, err = newPeer(h, "Z", 'Z', false); err != nil {
			t.Fatalf("newPeer(Z): %v", err)
		}
		joinAndConnect(t, h, z, call2, channel2)
		select {
		case held = <-y.heldCh:
		case <-time.After(heldOfferTimeout):
			t.Fatalf("Y: no server offer (for Z's track) within %s of Z publishing", heldOfferTimeout)
		}
		logf("Y: server offer held (%d m-lines); events %v", strings.Count(held.SDP, "\nm="), y.getEvents())
	})

	step(t, "client_offer_dropped", h, func(t *testing.T) {
		// Y offers over the WS while the server's offer is parked. pion
		// v4 cannot roll a local offer back (have-local-offer ->
		// rollback is refused), so the offer is created but not set as the
		// local description; the server sees the same bytes either way. An
		// answer to it would show up as a "ws:answer(rejected)" event.
		answerEvents := func() int {
			n := 0
			for _, ev := range y.getEvents() {
				if strings.HasPrefix(ev, "ws:answer") {
					n++
				}
			}
			return n
		}
		answers0 := answerEvents()
		err := y.do(5*time.Second, func() error {
			offer, err := y.pc.CreateOffer(nil)
			if err != nil {
				return fmt.Errorf("CreateOffer: %w", err)
			}
			y.logEvent("client:offer-sent-over-ws")
			return y.sendSDP(offer)
		})
		if err != nil {
			t.Fatalf("Y: client offer: %v", err)
		}
		time.Sleep(droppedOfferGrace)
		if n := answerEvents() - answers0; n != 0 {
			t.Fatalf("Y: the server answered the client offer sent while its own offer was outstanding (%d answers; events %v); rtcd drops it", n, y.getEvents())
		}
		noClose(t)
		if st := y.pc.ConnectionState(); st != webrtc.PeerConnectionStateConnected {
			t.Fatalf("Y: connection state %s after the dropped offer", st)
		}
		logf("Y: no answer within %s to the client offer sent mid-renegotiation; events %v", droppedOfferGrace, y.getEvents())

		// Answer the server's offer, which rtcd is still waiting for.
		y.holdOffers.Store(false)
		err = y.do(5*time.Second, func() error {
			if err := y.answerOffer(held, false); err != nil {
				return err
			}
			y.logEvent("client:answered-held-offer-over-ws")
			return y.flushRemoteCandidates()
		})
		if err != nil {
			t.Fatalf("Y: answering the held server offer: %v", err)
		}
	})

	step(t, "usable_after_dropped_offer", h, func(t *testing.T) {
		waitFor(t, "Y and Z to each receive >= 50 RTP packets", mediaTimeout, func() bool {
			return y.recv.Load() >= 50 && z.recv.Load() >= 50
		})
		checkMedia(t, []*peer{y, z})
		// Nothing late either: still no answer to the dropped offer, no
		// further offer parked, and no close.
		nAnswers := 0
		for _, ev := range y.getEvents() {
			if strings.HasPrefix(ev, "ws:answer") {
				nAnswers++
			}
		}
		if nAnswers != 1 {
			t.Errorf("Y: %d answers in total, want 1 (the initial offer's); the dropped offer must not be answered late (events %v)", nAnswers, y.getEvents())
		}
		select {
		case sd := <-y.heldCh:
			t.Errorf("Y: another server offer was parked: %d m-lines", strings.Count(sd.SDP, "\nm="))
		default:
		}
		if st := y.pc.SignalingState(); st != webrtc.SignalingStateStable {
			t.Errorf("Y: signaling state %s, want stable", st)
		}
		noClose(t)
		select {
		case ti := <-y.tracksCh:
			if ti.StreamID != z.sessionID {
				t.Errorf("Y: forwarded stream %q, want Z's session %s", ti.StreamID, z.sessionID)
			}
		default:
			t.Errorf("Y: no OnTrack recorded")
		}
		logf("Y: events %v", y.getEvents())
		logf("Z: events %v", z.getEvents())
		logf("%s / %s", y, z)
	})

	step(t, "leave_Y_Z", h, func(t *testing.T) { leavePair(t, y, z) })
}
