package compat

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4"
)

// Bounds used by TestUndeclaredMedia.
const (
	bogusPackets     = 100 // per phase, one every rtpInterval (2 s)
	bogusPayloadSize = 60  // real packets carry rtpPayloadSize (100) bytes
	bogusMarker      = '!' // first payload byte of every injected packet
	undeclaredPT     = 100 // neither negotiated nor registered by rtcd (Opus 111, VP8 96, AV1 45)
)

// tapTrack wraps a peer's TrackLocalStaticRTP. When pion binds the track
// to its RTPSender it gets the TrackLocalWriter of that sender (the
// sender's interceptor chain in front of the SRTP session), wraps it in a
// tapWriter and hands that to the static track. The tapWriter forwards the
// static track's packets, numbering them itself, and lets the test write
// raw RTP with any SSRC and payload type on the same SRTP transport.
type tapTrack struct {
	*webrtc.TrackLocalStaticRTP
	mu sync.Mutex
	w  *tapWriter
}

type tapContext struct {
	webrtc.TrackLocalContext
	w *tapWriter
}

func (c tapContext) WriteStream() webrtc.TrackLocalWriter { return c.w }

func (t *tapTrack) Bind(ctx webrtc.TrackLocalContext) (webrtc.RTPCodecParameters, error) {
	w := &tapWriter{next: ctx.WriteStream(), ssrc: uint32(ctx.SSRC()), seq: 7000}
	codec, err := t.TrackLocalStaticRTP.Bind(tapContext{TrackLocalContext: ctx, w: w})
	if err != nil {
		return codec, err
	}
	w.pt = uint8(codec.PayloadType)
	t.mu.Lock()
	t.w = w
	t.mu.Unlock()
	return codec, nil
}

func (t *tapTrack) writer() *tapWriter {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.w
}

// tapWriter numbers every packet on the sender's own SSRC from one counter
// (so injected packets on that SSRC sit inside its sequence space) and
// passes everything through.
type tapWriter struct {
	next webrtc.TrackLocalWriter
	ssrc uint32
	pt   uint8

	mu     sync.Mutex
	seq    uint16
	lastTS uint32
}

func (w *tapWriter) WriteRTP(h *rtp.Header, payload []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if h.SSRC == w.ssrc {
		h.SequenceNumber = w.seq
		w.seq++
		if h.PayloadType == w.pt {
			w.lastTS = h.Timestamp
		}
	}
	return w.next.WriteRTP(h, payload)
}

func (w *tapWriter) Write(b []byte) (int, error) {
	var pkt rtp.Packet
	if err := pkt.Unmarshal(b); err != nil {
		return 0, err
	}
	return w.WriteRTP(&pkt.Header, pkt.Payload)
}

// inject writes one raw packet. On the sender's own SSRC the timestamp is
// the last real one (seq is assigned by WriteRTP); on another SSRC the
// caller's seq/ts are used.
func (w *tapWriter) inject(ssrc uint32, pt uint8, seq uint16, ts uint32) error {
	payload := make([]byte, bogusPayloadSize)
	payload[0] = bogusMarker
	for i := 1; i < len(payload); i++ {
		payload[i] = 0xee
	}
	h := &rtp.Header{Version: 2, PayloadType: pt, SequenceNumber: seq, Timestamp: ts, SSRC: ssrc}
	if ssrc == w.ssrc {
		w.mu.Lock()
		h.Timestamp = w.lastTS
		w.mu.Unlock()
	}
	n, err := w.WriteRTP(h, payload)
	if err == nil && n == 0 {
		err = fmt.Errorf("nothing written (sender not started?)")
	}
	return err
}

// ssrcWatch is a pion LoggerFactory that passes everything to pion's
// default loggers and records the SSRCs of "Incoming unhandled RTP/RTCP
// ssrc" reports (RTP that arrived on an SSRC no negotiated track owns).
type ssrcWatch struct {
	base logging.LoggerFactory
	mu   sync.Mutex
	rtp  map[uint32]int
	rtcp map[uint32]int
}

func newSSRCWatch() *ssrcWatch {
	return &ssrcWatch{base: logging.NewDefaultLoggerFactory(), rtp: map[uint32]int{}, rtcp: map[uint32]int{}}
}

func (f *ssrcWatch) NewLogger(scope string) logging.LeveledLogger {
	return &ssrcWatchLogger{LeveledLogger: f.base.NewLogger(scope), f: f}
}

func (f *ssrcWatch) note(format string, args []any) {
	var m map[uint32]int
	switch {
	case strings.HasPrefix(format, "Incoming unhandled RTP ssrc("):
		m = f.rtp
	case strings.HasPrefix(format, "Incoming unhandled RTCP ssrc("):
		m = f.rtcp
	default:
		return
	}
	var ssrc uint32
	if len(args) > 0 {
		_, _ = fmt.Sscanf(fmt.Sprint(args[0]), "%d", &ssrc)
	}
	f.mu.Lock()
	m[ssrc]++
	f.mu.Unlock()
}

func (f *ssrcWatch) unhandledRTP() map[uint32]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[uint32]int{}
	for k, v := range f.rtp {
		out[k] = v
	}
	return out
}

type ssrcWatchLogger struct {
	logging.LeveledLogger
	f *ssrcWatch
}

func (l *ssrcWatchLogger) Warnf(format string, args ...any) {
	l.f.note(format, args)
	l.LeveledLogger.Warnf(format, args...)
}

func (l *ssrcWatchLogger) Errorf(format string, args ...any) {
	l.f.note(format, args)
	l.LeveledLogger.Errorf(format, args...)
}

// TestUndeclaredMedia: a publisher P writes raw RTP on its SRTP transport
// next to its normal Opus track: packets with SSRCs its SDP never declared
// (Opus PT, then an undeclared PT) and packets on its own SSRC with an
// undeclared PT. Meanwhile Q (same call) and S/T (another call) exchange
// Opus. Nothing injected may reach anybody, everybody keeps receiving, and
// P's own track keeps being forwarded. Observations are logged as
// "UNDECLARED" lines.
func TestUndeclaredMedia(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	h := newHarness(t, env)
	logf := func(format string, args ...any) { t.Logf("UNDECLARED "+format, args...) }

	step(t, "connect_hello", h, func(t *testing.T) { h.waitHello(t) })

	call1, ch1 := newID(), newID()
	call2, ch2 := newID(), newID()
	var tap *tapTrack
	watches := map[*peer]*ssrcWatch{}
	var p, q, s, u *peer
	step(t, "join", h, func(t *testing.T) {
		for _, x := range []struct {
			pp           **peer
			name         string
			callID, chID string
			tap          bool
		}{{&p, "P", call1, ch1, true}, {&q, "Q", call1, ch1, false}, {&s, "S", call2, ch2, false}, {&u, "U", call2, ch2, false}} {
			w := newSSRCWatch()
			opts := peerOptions{loggerFactory: w}
			if x.tap {
				opts.wrapTrack = func(tr *webrtc.TrackLocalStaticRTP) webrtc.TrackLocal {
					tap = &tapTrack{TrackLocalStaticRTP: tr}
					return tap
				}
			}
			var err error
			if *x.pp, err = newPeerWith(h, x.name, x.name[0], false, opts); err != nil {
				t.Fatalf("newPeer(%s): %v", x.name, err)
			}
			watches[*x.pp] = w
			joinAndConnect(t, h, *x.pp, x.callID, x.chID)
		}
	})
	all := []*peer{p, q, s, u}
	partner := map[*peer]*peer{p: q, q: p, s: u, u: s}

	step(t, "media_flows", h, func(t *testing.T) {
		if e := pairsGrow(all, partner, 50, mediaTimeout); e != "" {
			t.Fatalf("before injection: %s", e)
		}
		if tap == nil || tap.writer() == nil {
			t.Fatalf("P: the tap track was never bound by pion")
		}
		w := tap.writer()
		logf("P: sender SSRC %d, PT %d; raw writer %T", w.ssrc, w.pt, w.next)
	})

	// bogusSeen reports, per peer, anything that looks injected: the marker
	// byte, the bogus size, a PT other than Opus, a header SSRC that is not
	// the track's, and unhandled-SSRC reports naming an injected SSRC.
	bogusSeen := func(injected map[uint32]bool) []string {
		var out []string
		for _, x := range all {
			for _, st := range x.rxStats() {
				if n := st.tags[bogusMarker]; n > 0 {
					out = append(out, fmt.Sprintf("%s: %d packets with the injected marker on %s", x.name, n, st.String()))
				}
				if n := st.sizes[bogusPayloadSize]; n > 0 {
					out = append(out, fmt.Sprintf("%s: %d packets of the injected size on %s", x.name, n, st.String()))
				}
				for pt, n := range st.pts {
					if pt != opusPT {
						out = append(out, fmt.Sprintf("%s: %d packets with PT %d on %s", x.name, n, pt, st.String()))
					}
				}
				for ssrc, n := range st.headerSSRCs {
					if ssrc != st.ssrc || injected[ssrc] {
						out = append(out, fmt.Sprintf("%s: %d packets with header SSRC %d on track SSRC %d", x.name, n, ssrc, st.ssrc))
					}
				}
			}
			for ssrc, n := range watches[x].unhandledRTP() {
				if injected[ssrc] {
					out = append(out, fmt.Sprintf("%s: pion reported %d unhandled RTP streams with the injected SSRC %d", x.name, n, ssrc))
				}
			}
			if n := x.recvOther.Load(); n != 0 {
				out = append(out, fmt.Sprintf("%s: %d packets with wrong PT/size or its own tag", x.name, n))
			}
		}
		return out
	}

	// The first two phases (undeclared SSRCs) are asserted in full. The
	// last two put packets with a PT that is not in the SDP on P's own,
	// declared SSRC; there rtcd v1.2.6 itself does not hold up (pion's
	// TrackRemote.ReadRTP looks the PT up in the MediaEngine: PT 96 turns
	// the track into VP8 and rtcd forwards the packet as Opus; PT 100 gives
	// "codec not found", on which rtcd's track handler returns and P's voice
	// is no longer forwarded), so for those only the other sessions are
	// asserted and what happened to P's track is logged.
	injected := map[uint32]bool{}
	phases := []struct {
		name     string
		ssrc     func(w *tapWriter) uint32
		pt       uint8
		strict   bool
		describe string
	}{
		{"undeclared_ssrc_opus_pt", func(w *tapWriter) uint32 { return w.ssrc ^ 0x5a5a5a5a }, opusPT, true,
			"undeclared SSRC, PT 111 (Opus)"},
		{"undeclared_ssrc_undeclared_pt", func(w *tapWriter) uint32 { return w.ssrc ^ 0x3c3c3c3c }, undeclaredPT, true,
			fmt.Sprintf("undeclared SSRC, undeclared PT %d", undeclaredPT)},
		{"declared_ssrc_pt96", func(w *tapWriter) uint32 { return w.ssrc }, 96, false,
			"P's own SSRC (inside its sequence space), PT 96 (VP8 in rtcd's MediaEngine, not in the audio m-line)"},
		{"declared_ssrc_undeclared_pt", func(w *tapWriter) uint32 { return w.ssrc }, undeclaredPT, false,
			fmt.Sprintf("P's own SSRC (inside its sequence space), undeclared PT %d", undeclaredPT)},
	}
	var summary []string
	t.Cleanup(func() {
		for _, l := range summary {
			logf("| %s", l)
		}
	})
	for _, ph := range phases {
		step(t, ph.name, h, func(t *testing.T) {
			w := tap.writer()
			ssrc := ph.ssrc(w)
			if ssrc != w.ssrc {
				injected[ssrc] = true
			}
			checked := all
			if !ph.strict {
				checked = []*peer{p, s, u} // not Q's view of P
			}
			sent0 := p.sent.Load()
			dropped0, counted := droppedUndeclaredSSRC(t, env.url)
			q0 := q.recvByTag[p.tag].Load()
			qBogus0 := bogusCount(q)
			errCh := make(chan error, 1)
			go func() {
				var firstErr error
				written := 0
				tick := time.NewTicker(rtpInterval)
				defer tick.Stop()
				for i := 0; i < bogusPackets; i++ {
					<-tick.C
					if err := w.inject(ssrc, ph.pt, uint16(20000+i), uint32(960*i)); err != nil {
						if firstErr == nil {
							firstErr = fmt.Errorf("packet %d: %w", i, err)
						}
						continue
					}
					written++
				}
				if firstErr != nil {
					firstErr = fmt.Errorf("%d/%d written; %w", written, bogusPackets, firstErr)
				}
				errCh <- firstErr
			}()
			// While injecting everybody keeps receiving from its partner
			// (Q from P included in the strict phases).
			growErr := pairsGrow(checked, partner, 40, 3*time.Second)
			if err := <-errCh; err != nil {
				t.Fatalf("P: raw RTP injection failed: %v", err)
			}
			if growErr != "" {
				t.Fatalf("during injection: %s", growErr)
			}
			time.Sleep(500 * time.Millisecond)
			if e := pairsGrow(checked, partner, 25, 3*time.Second); e != "" {
				t.Fatalf("after injection: %s", e)
			}
			qFromP := q.recvByTag[p.tag].Load() - q0
			qBogus := bogusCount(q) - qBogus0
			pAfter := "yes"
			if e := pairsGrow([]*peer{q}, partner, 25, 2*time.Second); e != "" {
				pAfter = "NO (" + e + ")"
			}
			var bad []string
			for _, b := range bogusSeen(injected) {
				if ph.strict || !strings.HasPrefix(b, "Q:") {
					bad = append(bad, b)
				}
			}
			for _, b := range bad {
				t.Errorf("injected media was forwarded: %s", b)
			}
			line := fmt.Sprintf("%-30s | P wrote %d (%s, SSRC %d) next to %d of its own | Q got %d of P's, %d injected | P's track still forwarded after: %s | pion unhandled RTP SSRCs: P%v Q%v S%v U%v",
				ph.name, bogusPackets, ph.describe, ssrc, p.sent.Load()-sent0, qFromP, qBogus, pAfter,
				watches[p].unhandledRTP(), watches[q].unhandledRTP(), watches[s].unhandledRTP(), watches[u].unhandledRTP())
			// rtcd-rs counts what it drops (rtcd has no such metric: logged only there).
			if dropped1, ok := droppedUndeclaredSSRC(t, env.url); counted && ok && ssrc != w.ssrc {
				line += fmt.Sprintf(" | rtcd_net_dropped_total{reason=undeclared_ssrc} +%d", dropped1-dropped0)
				if dropped1-dropped0 < bogusPackets {
					t.Errorf("rtcd_net_dropped_total{reason=\"undeclared_ssrc\"} grew by %d, want at least the %d injected packets", dropped1-dropped0, bogusPackets)
				}
			}
			summary = append(summary, line)
			logf("%s", line)
			if ph.strict && pAfter != "yes" {
				t.Errorf("P's own track is no longer forwarded to Q: %s", pAfter)
			}
		})
	}

	step(t, "final_state", h, func(t *testing.T) {
		for _, x := range all {
			var tracks []remoteTrackInfo
		drain:
			for {
				select {
				case ti := <-x.tracksCh:
					tracks = append(tracks, ti)
				default:
					break drain
				}
			}
			if len(tracks) != 1 || tracks[0].StreamID != partner[x].sessionID {
				t.Errorf("%s: remote tracks %+v, want exactly %s's voice track (stream %s)", x.name, tracks, partner[x].name, partner[x].sessionID)
			}
			for _, st := range x.rxStats() {
				logf("%s received %s", x.name, st.String())
			}
			logf("%s", x)
		}
	})
}

// pairsGrow waits until every peer in peers received n more packets from
// its call partner (by tag) and returns "" or what was missing.
func pairsGrow(peers []*peer, partner map[*peer]*peer, n int64, timeout time.Duration) string {
	base := map[*peer]int64{}
	for _, x := range peers {
		base[x] = x.recvByTag[partner[x].tag].Load()
	}
	deadline := time.Now().Add(timeout)
	for {
		var short []string
		for _, x := range peers {
			if d := x.recvByTag[partner[x].tag].Load() - base[x]; d < n {
				short = append(short, fmt.Sprintf("%s<-%s:+%d", x.name, partner[x].name, d))
			}
		}
		if len(short) == 0 {
			return ""
		}
		if time.Now().After(deadline) {
			return fmt.Sprintf("within %s not every session received %d more packets from its partner: %v", timeout, n, short)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// bogusCount is how many packets with the injected marker x received.
func bogusCount(x *peer) int64 {
	var n int64
	for _, st := range x.rxStats() {
		n += st.tags[bogusMarker]
	}
	return n
}

// droppedUndeclaredSSRC reads rtcd-rs's rtcd_net_dropped_total{reason="undeclared_ssrc"} from
// /metrics; ok is false when the server has no such family (the reference rtcd).
func droppedUndeclaredSSRC(t *testing.T, url string) (n int, ok bool) {
	t.Helper()
	resp, err := http.Get(url + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	text := string(body)
	if !strings.Contains(text, "rtcd_net_dropped") {
		return 0, false
	}
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "rtcd_net_dropped_total{") && strings.Contains(line, `reason="undeclared_ssrc"`) {
			fields := strings.Fields(line)
			v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
			if err != nil {
				t.Fatalf("metric line %q: %v", line, err)
			}
			return int(v), true
		}
	}
	return 0, true
}
