package compat

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc"
	"github.com/mattermost/rtcd/service/rtc/dc"
	"github.com/pion/webrtc/v4"
)

// Bounds used by TestChurn.
const (
	churnDuration      = 20 * time.Second        // how long short-lived sessions keep joining
	churnJoinEvery     = 1100 * time.Millisecond // one join attempt per tick
	churnMaxConcurrent = 3                       // short-lived sessions alive at once
	churnMinJoins      = 15
	churnOvertime      = 8 * time.Second
	churnToggleEvery   = 2500 * time.Millisecond // second-track toggles of the long-lived toggler
	churnLockTimeout   = 8 * time.Second         // DC Lock retries (the server holds it while its own offer is out)
	churnAnswerTimeout = 5 * time.Second
	churnServerOffer   = 6 * time.Second // a fresh session must get a server offer for the tracks already in the call
	churnStaleOffer    = 10 * time.Second
	churnMinGrowth     = 25 // packets per long-lived pair in the final check (~0.5 s at 50 pps)
	churnGrowthTimeout = 4 * time.Second
)

// Kinds of short-lived sessions.
const (
	kindFull        = "full"         // join, offer, connect, send, mute, unmute, leave after 1-4 s
	kindEarlyLeave  = "early-leave"  // join, offer, leave at once (before the answer)
	kindNoOffer     = "no-offer"     // join, leave after 0.2-0.6 s without ever offering
	kindAfterOffer  = "after-offer"  // join, offer, connect, send, leave right when the first server offer arrives (unanswered)
	kindFullDC      = "full-dc"      // kindFull with dcSignaling: true
	kindEarlyAnswer = "early-answer" // join, offer, leave right after the answer arrives (before ICE/DTLS)
)

var churnSchedule = []string{kindFull, kindEarlyLeave, kindFullDC, kindAfterOffer, kindNoOffer, kindFull, kindEarlyAnswer}

// closeLog collects every close message of the harness with its arrival
// time (TestChurn reads h.closeCh only through it).
type closeLog struct {
	mu   sync.Mutex
	at   map[string][]time.Time
	stop chan struct{}
	done chan struct{}
}

func newCloseLog(h *harness) *closeLog {
	cl := &closeLog{at: map[string][]time.Time{}, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(cl.done)
		for {
			select {
			case data := <-h.closeCh:
				cl.mu.Lock()
				cl.at[data["sessionID"]] = append(cl.at[data["sessionID"]], time.Now())
				cl.mu.Unlock()
			case <-cl.stop:
				return
			}
		}
	}()
	return cl
}

func (cl *closeLog) get(sessionID string) []time.Time {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	return append([]time.Time(nil), cl.at[sessionID]...)
}

// wait waits for the first close of sessionID.
func (cl *closeLog) wait(sessionID string, timeout time.Duration) (time.Time, bool) {
	deadline := time.Now().Add(timeout)
	for {
		if at := cl.get(sessionID); len(at) > 0 {
			return at[0], true
		}
		if time.Now().After(deadline) {
			return time.Time{}, false
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (cl *closeLog) close() {
	select {
	case <-cl.stop:
	default:
		close(cl.stop)
	}
	<-cl.done
}

// shortSession is what one short-lived session did and saw.
type shortSession struct {
	name, kind string
	dcSig      bool
	sessionID  string
	lifetime   time.Duration
	p          *peer

	joinAt, leaveAt, closeAt time.Time
	closes                   int
	connected                bool
	answerSeen               bool
	serverOffersBeforeLeave  int
	notes                    []string
	errs                     []string
}

func (s *shortSession) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

func (s *shortSession) fail(format string, args ...any) {
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
}

func (s *shortSession) serverOffers() int {
	if s.p == nil {
		return 0
	}
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return s.p.offersRecvd + s.p.dcOffers
}

// toggleResult is one client-initiated renegotiation of the toggler.
type toggleResult struct {
	on        bool
	lockTries int
	took      time.Duration
	mLines    int
	err       string
}

// TestChurn keeps three long-lived sessions (L1..L3) in one call while
// short-lived sessions join and leave around them for churnDuration, and L3
// adds and removes a second audio track through client-initiated
// renegotiation. Everything each server did is logged as "CHURN" lines
// (grep 'CHURN' test.log), with a summary table ("CHURN |").
func TestChurn(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	h := newHarness(t, env)
	logf := func(format string, args ...any) { t.Logf("CHURN "+format, args...) }

	step(t, "connect_hello", h, func(t *testing.T) { h.waitHello(t) })
	closes := newCloseLog(h)
	t.Cleanup(closes.close)

	callID, channelID := newID(), newID()
	var long []*peer
	step(t, "join_long_lived", h, func(t *testing.T) {
		for i, dcSig := range []bool{false, false, !env.skip["dc"]} {
			name := fmt.Sprintf("L%d", i+1)
			p, err := newPeer(h, name, byte('1'+i), false)
			if err != nil {
				t.Fatalf("newPeer(%s): %v", name, err)
			}
			p.dcSignaling = dcSig
			joinAndConnect(t, h, p, callID, channelID)
			long = append(long, p)
		}
		waitLongPairs(t, long, 50, mediaTimeout)
		for _, p := range long {
			logf("%s joined (dcSignaling=%v): %s", p.name, p.dcSignaling, p)
		}
	})
	toggler := long[2]
	isLong := map[string]string{}
	for _, p := range long {
		isLong[p.sessionID] = p.name
	}

	seed := uint64(time.Now().UnixNano())
	logf("random seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 0x636875726e))

	var shorts []*shortSession
	var toggles []toggleResult
	var samples []string
	var sampleCounts [][]int64 // per sample, per long-lived pair (pairOrder)
	var pairOrder []string
	step(t, "churn", h, func(t *testing.T) {
		stop := make(chan struct{})
		var wg sync.WaitGroup

		// L3 toggles a second audio track on and off.
		toggleDone := make(chan struct{})
		go func() {
			defer close(toggleDone)
			var sender *webrtc.RTPSender
			tick := time.NewTicker(churnToggleEvery)
			defer tick.Stop()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				res := toggleSecondTrack(toggler, &sender, n)
				toggles = append(toggles, res)
				if res.err != "" {
					h.fail("%s: toggle #%d (second track %s): %s", toggler.name, n+1, onOff(res.on), res.err)
					return
				}
			}
		}()

		// Per-second samples of what each long-lived session receives
		// from each other one (logged, asserted only at the end).
		sampleDone := make(chan struct{})
		go func() {
			defer close(sampleDone)
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stop:
					return
				case <-tick.C:
				}
				var sb strings.Builder
				var counts []int64
				first := len(pairOrder) == 0
				for _, rx := range long {
					for _, tx := range long {
						if rx != tx {
							n := rx.recvByTag[tx.tag].Load()
							fmt.Fprintf(&sb, " %s<-%s:%d", rx.name, tx.name, n)
							counts = append(counts, n)
							if first {
								pairOrder = append(pairOrder, rx.name+"<-"+tx.name)
							}
						}
					}
				}
				samples = append(samples, strings.TrimSpace(sb.String()))
				sampleCounts = append(sampleCounts, counts)
			}
		}()

		sem := make(chan struct{}, churnMaxConcurrent)
		start := time.Now()
		var mu sync.Mutex
		// Joins go on for churnDuration, and on a slow machine up to
		// churnOvertime longer until churnMinJoins were started.
		joinsUntil := func(i int) time.Time {
			if i < churnMinJoins {
				return start.Add(churnDuration + churnOvertime)
			}
			return start.Add(churnDuration)
		}
		for i := 0; time.Now().Before(joinsUntil(i)); i++ {
			gotSlot := false
			select {
			case sem <- struct{}{}:
				gotSlot = true
			case <-time.After(time.Until(joinsUntil(i))):
			}
			if !gotSlot || !time.Now().Before(joinsUntil(i)) {
				break // the slot, if taken, is never needed again
			}
			kind := churnSchedule[i%len(churnSchedule)]
			s := &shortSession{
				name:     fmt.Sprintf("S%02d", i+1),
				kind:     kind,
				dcSig:    kind == kindFullDC && !env.skip["dc"],
				lifetime: time.Second + time.Duration(rng.Int64N(int64(3*time.Second))),
			}
			tag := byte('a' + i%26)
			mu.Lock()
			shorts = append(shorts, s)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				runShortSession(h, closes, long, s, tag, callID, channelID)
			}()
			time.Sleep(churnJoinEvery + time.Duration(rng.Int64N(int64(400*time.Millisecond))) - 200*time.Millisecond)
		}
		wg.Wait()
		close(stop)
		<-toggleDone
		<-sampleDone
		logf("churn over after %s: %d short-lived joins, %d toggles", time.Since(start).Round(time.Millisecond), len(shorts), len(toggles))
	})

	for _, s := range samples {
		logf("sample %s", s)
	}
	for i, r := range toggles {
		logf("%s toggle #%d second track %s: lock tries %d, took %s, %d m-lines after, err %q", toggler.name, i+1, onOff(r.on), r.lockTries, r.took.Round(time.Millisecond), r.mLines, r.err)
	}

	step(t, "long_lived_never_stalled", h, func(t *testing.T) {
		// Over every 2 s window of the churn each long-lived session got
		// packets from each other one.
		minGain := map[string]int64{}
		for i := 2; i < len(sampleCounts); i++ {
			for j, pr := range pairOrder {
				d := sampleCounts[i][j] - sampleCounts[i-2][j]
				if v, ok := minGain[pr]; !ok || d < v {
					minGain[pr] = d
				}
				if d == 0 {
					t.Errorf("%s: no packets between samples %d and %d (s into the churn)", pr, i-1, i+1)
				}
			}
		}
		logf("fewest packets per long-lived pair in any 2 s window of the churn: %v", minGain)
	})

	step(t, "short_lived_closed", h, func(t *testing.T) {
		joins := map[string]int{}
		for _, s := range shorts {
			joins[s.kind]++
			for _, e := range s.errs {
				t.Errorf("%s (%s): %s", s.name, s.kind, e)
			}
			at := closes.get(s.sessionID)
			switch {
			case len(at) == 0:
				t.Errorf("%s (%s, session %s): no close after its leave", s.name, s.kind, s.sessionID)
			case at[0].Before(s.leaveAt):
				t.Errorf("%s (%s): close came %s before its leave", s.name, s.kind, s.leaveAt.Sub(at[0]).Round(time.Millisecond))
			case at[0].Sub(s.leaveAt) > closeTimeout:
				t.Errorf("%s (%s): close came %s after its leave (> %s)", s.name, s.kind, at[0].Sub(s.leaveAt).Round(time.Millisecond), closeTimeout)
			}
			if len(at) > 1 {
				t.Errorf("%s (%s): %d close messages", s.name, s.kind, len(at))
			}
		}
		logf("short-lived joins by kind: %v", joins)
		if len(shorts) < churnMinJoins {
			t.Errorf("only %d short-lived joins, want >= %d", len(shorts), churnMinJoins)
		}
	})

	step(t, "long_lived_intact", h, func(t *testing.T) {
		for _, p := range long {
			if at := closes.get(p.sessionID); len(at) > 0 {
				t.Errorf("%s got %d close messages during the churn", p.name, len(at))
			}
		}
		waitLongPairs(t, long, churnMinGrowth, churnGrowthTimeout)
		for _, p := range long {
			if st := p.pc.SignalingState(); st != webrtc.SignalingStateStable {
				t.Errorf("%s: signaling state %s, want stable", p.name, st)
			}
			if since := p.unansweredOffer(); !since.IsZero() && time.Since(since) > churnStaleOffer {
				t.Errorf("%s: a server offer has been unanswered for %s", p.name, time.Since(since).Round(time.Millisecond))
			}
			if st := p.pc.ConnectionState(); st != webrtc.PeerConnectionStateConnected {
				t.Errorf("%s: connection state %s", p.name, st)
			}
			if n := p.recvOther.Load(); n != 0 {
				t.Errorf("%s: %d packets with wrong PT/size or its own tag", p.name, n)
			}
		}
		cfgs, code, err := h.client.GetSessions(callID)
		if err != nil || code != http.StatusOK {
			t.Fatalf("GetSessions = %d, %v", code, err)
		}
		var left []string
		for _, c := range cfgs {
			if n, ok := isLong[c.SessionID]; ok {
				left = append(left, n)
			} else {
				left = append(left, "short:"+c.SessionID)
			}
		}
		sort.Strings(left)
		if strings.Join(left, ",") != "L1,L2,L3" {
			t.Errorf("GetSessions after the churn = %v, want [L1 L2 L3]", left)
		}
		logf("GetSessions after the churn: %v", left)
	})

	// Summary of what the server did.
	t.Cleanup(func() {
		logf("| %-5s | %-12s | %-5s | %-9s | %-8s | %-8s | %-7s | %s", "name", "kind", "dcSig", "lifetime", "offers", "closeΔ", "closes", "notes")
		for _, s := range shorts {
			delta := "-"
			if at := closes.get(s.sessionID); len(at) > 0 && !s.leaveAt.IsZero() {
				delta = at[0].Sub(s.leaveAt).Round(time.Millisecond).String()
			}
			logf("| %-5s | %-12s | %-5v | %-9s | %-8d | %-8s | %-7d | connected=%v %s", s.name, s.kind, s.dcSig,
				s.leaveAt.Sub(s.joinAt).Round(time.Millisecond), s.serverOffers(), delta, len(closes.get(s.sessionID)), s.connected, strings.Join(s.notes, "; "))
		}
		for _, p := range long {
			p.mu.Lock()
			wsO, dcO, wsA, dcA, mm, answered := p.offersRecvd, p.dcOffers, p.answersRecvd, p.dcAnswers, len(p.mediaMaps), p.offerAnswersSent
			p.mu.Unlock()
			var from strings.Builder
			for _, q := range long {
				if q != p {
					fmt.Fprintf(&from, " %s:%d", q.name, p.recvByTag[q.tag].Load())
				}
			}
			mLines := 0
			if rd := p.pc.CurrentRemoteDescription(); rd != nil {
				mLines = strings.Count(rd.SDP, "\nm=")
			}
			logf("| %-5s | long dcSig=%v | server offers ws=%d dc=%d (answered %d), answers to own offers ws=%d dc=%d, MediaMaps %d, closes %d, recv%s, signaling %s, %d m-lines",
				p.name, p.dcSignaling, wsO, dcO, answered, wsA, dcA, mm, len(closes.get(p.sessionID)), from.String(), p.pc.SignalingState(), mLines)
		}
	})
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// waitLongPairs waits until every long-lived session has received at least
// n more packets from every other long-lived one.
func waitLongPairs(t *testing.T, long []*peer, n int64, timeout time.Duration) {
	t.Helper()
	type pair struct{ rx, tx *peer }
	var pairs []pair
	base := map[pair]int64{}
	for _, rx := range long {
		for _, tx := range long {
			if rx != tx {
				pr := pair{rx, tx}
				pairs = append(pairs, pr)
				base[pr] = rx.recvByTag[tx.tag].Load()
			}
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		var stalled []string
		for _, pr := range pairs {
			if got := pr.rx.recvByTag[pr.tx.tag].Load() - base[pr]; got < n {
				stalled = append(stalled, fmt.Sprintf("%s<-%s:+%d", pr.rx.name, pr.tx.name, got))
			}
		}
		if len(stalled) == 0 {
			return
		}
		if time.Now().After(deadline) {
			for _, p := range long {
				t.Logf("peer state: %s", p)
			}
			t.Fatalf("within %s not every long-lived session received %d more packets from every other one; short: %v", timeout, n, stalled)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runShortSession runs one short-lived session to the end: join, whatever
// its kind does, leave, wait for the close, close the PeerConnection. It
// never calls t.Fatal (it runs on its own goroutine); problems go to s.errs.
func runShortSession(h *harness, closes *closeLog, long []*peer, s *shortSession, tag byte, callID, channelID string) {
	send := func(typ string, data any) {
		if err := h.client.Send(*service.NewClientMessage(typ, data)); err != nil {
			s.fail("Send(%s): %v", typ, err)
		}
	}
	leave := func() {
		if s.p != nil {
			s.serverOffersBeforeLeave = s.serverOffers()
		}
		s.leaveAt = time.Now()
		send(service.ClientMessageLeave, map[string]string{"sessionID": s.sessionID})
	}

	if s.kind == kindNoOffer {
		s.sessionID = newID()
		s.joinAt = time.Now()
		send(service.ClientMessageJoin, map[string]any{
			"callID": callID, "userID": newID(), "sessionID": s.sessionID, "channelID": channelID,
			"av1Support": false, "dcSignaling": false,
		})
		time.Sleep(200*time.Millisecond + time.Duration(tag%5)*100*time.Millisecond)
		leave()
	} else {
		p, err := newPeer(h, s.name, tag, false)
		if err != nil {
			s.fail("newPeer: %v", err)
			return
		}
		s.p = p
		s.sessionID = p.sessionID
		p.dcSignaling = s.dcSig
		if s.kind == kindAfterOffer {
			p.holdOffers.Store(true)
		}
		s.joinAt = time.Now()
		send(service.ClientMessageJoin, p.joinMsg(callID, channelID))
		if err := p.offer(); err != nil {
			s.fail("offer: %v", err)
		}
		answered := func() bool {
			a, _, _ := p.counts()
			return a > 0
		}
		connected := func(timeout time.Duration) bool {
			select {
			case <-p.connectedCh:
				s.connected = true
				return true
			case <-time.After(timeout):
				return false
			}
		}
		switch s.kind {
		case kindEarlyLeave:
			leave()
			s.answerSeen = answered()
			s.note("answer before leave: %v", s.answerSeen)
		case kindEarlyAnswer:
			deadline := time.Now().Add(connectTimeout)
			for !answered() && time.Now().Before(deadline) {
				time.Sleep(2 * time.Millisecond)
			}
			s.answerSeen = answered()
			if !s.answerSeen {
				s.fail("no answer to the initial offer within %s", connectTimeout)
			}
			s.connected = p.pc.ConnectionState() == webrtc.PeerConnectionStateConnected
			s.note("left right after the answer (ICE %s)", p.pc.ICEConnectionState())
			leave()
		case kindAfterOffer:
			if !connected(connectTimeout) {
				s.fail("not connected within %s", connectTimeout)
				leave()
				break
			}
			p.startRTP()
			select {
			case sd := <-p.heldCh:
				s.note("left right after server offer #1 (%d m-lines, unanswered)", strings.Count(sd.SDP, "\nm="))
			case <-time.After(churnServerOffer):
				s.fail("no server offer within %s of connecting (the call has 3 publishing sessions)", churnServerOffer)
			}
			leave()
		default: // kindFull, kindFullDC
			if !connected(connectTimeout) {
				s.fail("not connected within %s", connectTimeout)
				leave()
				break
			}
			p.startRTP()
			rest := s.lifetime - time.Since(s.joinAt)
			if rest < 600*time.Millisecond {
				rest = 600 * time.Millisecond
			}
			time.Sleep(rest * 3 / 10)
			if err := h.sendRTC(rtc.Message{SessionID: s.sessionID, Type: rtc.MuteMessage}); err != nil {
				s.fail("send mute: %v", err)
			}
			time.Sleep(rest * 3 / 10)
			if err := h.sendRTC(rtc.Message{SessionID: s.sessionID, Type: rtc.UnmuteMessage}); err != nil {
				s.fail("send unmute: %v", err)
			}
			time.Sleep(rest * 4 / 10)
			var got []string
			for _, q := range long {
				got = append(got, fmt.Sprintf("%s:%d", q.name, p.recvByTag[q.tag].Load()))
			}
			s.note("sent %d, received from long-lived %v", p.sent.Load(), got)
			leave()
		}
	}

	at, ok := closes.wait(s.sessionID, closeTimeout)
	if ok {
		s.closeAt = at
	} else {
		s.fail("no close within %s of its leave", closeTimeout)
	}
	if s.p != nil {
		p := s.p
		// Close the PeerConnection on its signaling goroutine, so no
		// answer is being applied while it closes.
		if err := p.do(5*time.Second, func() error { p.close(); return nil }); err != nil {
			p.close()
		}
	}
}

// toggleSecondTrack adds (n even) or removes (n odd) a second audio track on
// p and renegotiates from the client side: over the DC under the DC Lock when
// p joined with dcSignaling, else with a plain WS offer. The track sends no
// RTP (rtcd would take it as the session's new voice track).
func toggleSecondTrack(p *peer, sender **webrtc.RTPSender, n int) (res toggleResult) {
	res.on = *sender == nil
	start := time.Now()
	defer func() { res.took = time.Since(start) }()

	locked := false
	if p.dcSignaling {
		lockMsg, _ := dc.EncodeMessage(dc.MessageTypeLock, nil)
		deadline := time.Now().Add(churnLockTimeout)
		for {
			res.lockTries++
			if err := p.dc.Send(lockMsg); err != nil {
				res.err = fmt.Sprintf("DC send Lock: %v", err)
				return
			}
			m, err := p.waitDC(2*time.Second, func(m dcMessage) bool { return !m.text && m.msgType == dc.MessageTypeLock })
			if err != nil {
				res.err = fmt.Sprintf("DC Lock: no reply: %v", err)
				return
			}
			if m.payload == true {
				locked = true
				break
			}
			if time.Now().After(deadline) {
				res.err = fmt.Sprintf("DC Lock not granted within %s (%d tries)", churnLockTimeout, res.lockTries)
				return
			}
			time.Sleep(dcLockRetry)
		}
	}
	unlock := func() {
		if locked {
			msg, _ := dc.EncodeMessage(dc.MessageTypeUnlock, nil)
			if err := p.dc.Send(msg); err != nil && res.err == "" {
				res.err = fmt.Sprintf("DC send Unlock: %v", err)
			}
		}
	}
	defer unlock()

	p.mu.Lock()
	ws0, dc0 := p.answersRecvd, p.dcAnswers
	p.mu.Unlock()
	err := p.do(5*time.Second, func() error {
		if st := p.pc.SignalingState(); st != webrtc.SignalingStateStable {
			return fmt.Errorf("signaling state %s before the client offer", st)
		}
		if res.on {
			tr, err := p.addSilentAudioTrack(fmt.Sprintf("audio2-%s-%d", p.name, n), "stream2-"+p.name)
			if err != nil {
				return err
			}
			*sender = tr.Sender()
		} else {
			if err := p.pc.RemoveTrack(*sender); err != nil {
				return fmt.Errorf("RemoveTrack: %w", err)
			}
			*sender = nil
		}
		offer, err := p.pc.CreateOffer(nil)
		if err != nil {
			return fmt.Errorf("CreateOffer: %w", err)
		}
		if err := p.pc.SetLocalDescription(offer); err != nil {
			return fmt.Errorf("SetLocalDescription(offer): %w", err)
		}
		p.logEvent(fmt.Sprintf("client:offer(second track %s)", onOff(res.on)))
		if p.dcSignaling {
			return p.sendDCSDP(*p.pc.LocalDescription())
		}
		return p.sendSDP(*p.pc.LocalDescription())
	})
	if err != nil {
		res.err = err.Error()
		return
	}
	deadline := time.Now().Add(churnAnswerTimeout)
	for {
		p.mu.Lock()
		ws1, dc1 := p.answersRecvd, p.dcAnswers
		p.mu.Unlock()
		if ws1 > ws0 || dc1 > dc0 {
			if p.dcSignaling && ws1 > ws0 {
				res.err = "the answer to an offer sent over the DC came over the WS"
			}
			break
		}
		if time.Now().After(deadline) {
			res.err = fmt.Sprintf("no answer within %s (signaling state %s)", churnAnswerTimeout, p.pc.SignalingState())
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	if rd := p.pc.CurrentRemoteDescription(); rd != nil {
		res.mLines = strings.Count(rd.SDP, "\nm=")
	}
	return
}
