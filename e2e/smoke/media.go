// Media for the smoke suite's participants: a voice track of Opus silence frames (20 ms each)
// and a screen track of small synthetic VP8 frames (a keyframe every second), both real RTP
// through pion, and a count of what each participant receives per remote track.
package main

import (
	"context"
	"encoding/binary"
	"sync"
	"time"

	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// opusSilence is one 20 ms Opus frame (TOC 0xf8: CELT fullband 20 ms, mono) of silence.
var opusSilence = []byte{0xf8, 0xff, 0xfe}

// NewVoiceTrack is an Opus track; Pump sends on it.
func NewVoiceTrack(name string) (*webrtc.TrackLocalStaticSample, error) {
	return webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "voice-"+name, "voice-stream-"+name)
}

// NewScreenTrack is a VP8 track; Pump sends on it.
func NewScreenTrack(name string) (*webrtc.TrackLocalStaticSample, error) {
	return webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000}, "screen-"+name, "screen-stream-"+name)
}

// VP8Frame is a synthetic VP8 frame of size bytes: a keyframe header (frame tag with the key
// bit clear, start code, 320x180) or an interframe tag, then filler. Nobody decodes it; the
// SFU reads the keyframe bit to start viewers and switch layers.
func VP8Frame(key bool, size int) []byte {
	if size < 10 {
		size = 10
	}
	b := make([]byte, size)
	firstPart := uint32(size - 10)
	tag := firstPart<<5 | 1<<4 // show_frame, version 0
	if !key {
		tag |= 1 // inter frame
	}
	b[0], b[1], b[2] = byte(tag), byte(tag>>8), byte(tag>>16)
	if key {
		copy(b[3:], []byte{0x9d, 0x01, 0x2a})
		binary.LittleEndian.PutUint16(b[6:], 320)
		binary.LittleEndian.PutUint16(b[8:], 180)
	}
	for i := 10; i < size; i++ {
		b[i] = byte(i)
	}
	return b
}

// PumpVoice writes Opus silence every 20 ms until ctx ends.
func PumpVoice(ctx context.Context, t *webrtc.TrackLocalStaticSample) {
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_ = t.WriteSample(media.Sample{Data: opusSilence, Duration: 20 * time.Millisecond})
		}
	}
}

// PumpScreen writes 15 frames a second (1200 bytes, a keyframe every 15th) until ctx ends.
func PumpScreen(ctx context.Context, t *webrtc.TrackLocalStaticSample) {
	const fps = 15
	tick := time.NewTicker(time.Second / fps)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_ = t.WriteSample(media.Sample{Data: VP8Frame(n%fps == 0, 1200), Duration: time.Second / fps})
		}
	}
}

// Inbound counts what a participant receives, per remote track ID.
type Inbound struct {
	mu     sync.Mutex
	tracks map[string]*InTrack
	notify chan struct{}
}

// InTrack is one remote track.
type InTrack struct {
	ID      string
	Kind    string
	First   time.Time
	Packets int
}

// NewInbound is an empty count.
func NewInbound() *Inbound {
	return &Inbound{tracks: map[string]*InTrack{}, notify: make(chan struct{}, 1)}
}

// Packet records one packet of a remote track.
func (in *Inbound) Packet(id, kind string, at time.Time) {
	in.mu.Lock()
	t, ok := in.tracks[id]
	if !ok {
		t = &InTrack{ID: id, Kind: kind, First: at}
		in.tracks[id] = t
	}
	t.Packets++
	in.mu.Unlock()
	select {
	case in.notify <- struct{}{}:
	default:
	}
}

// Snapshot copies the tracks that match kind ("" for all).
func (in *Inbound) Snapshot(kind string) []InTrack {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out []InTrack
	for _, t := range in.tracks {
		if kind == "" || t.Kind == kind {
			out = append(out, *t)
		}
	}
	return out
}

// Packets is the packet count of the tracks of kind.
func (in *Inbound) Packets(kind string) int {
	n := 0
	for _, t := range in.Snapshot(kind) {
		n += t.Packets
	}
	return n
}

// WaitFor waits until cond holds over the inbound tracks or ctx ends; false on timeout.
func (in *Inbound) WaitFor(ctx context.Context, cond func([]InTrack) bool) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond(in.Snapshot("")) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-in.notify:
		case <-tick.C:
		}
	}
}
