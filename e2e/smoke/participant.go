// One call participant of the smoke suite: a test user in a call through the Mattermost server,
// with rtcd's own Go client package (what the Calls plugin's load tool and tests use), sending
// real media and counting what reaches it.
package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/mattermost/rtcd/client"
	"github.com/pion/webrtc/v4"
)

// Participant is one user in the call.
type Participant struct {
	Name      string
	c         *client.Client
	In        *Inbound
	connected chan struct{}
	once      sync.Once
	mu        sync.Mutex
	errs      []error
	stop      context.CancelFunc
	ctx       context.Context
	voice     *webrtc.TrackLocalStaticSample
	pumping   bool
}

// Join connects a user to the channel's call and waits for its media connection; it returns
// how long that took.
func Join(parent context.Context, siteURL string, u User, channelID string, timeout time.Duration) (*Participant, time.Duration, error) {
	c, err := client.New(client.Config{SiteURL: siteURL, AuthToken: u.Token, ChannelID: channelID},
		client.WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
	if err != nil {
		return nil, 0, fmt.Errorf("%s: rtcd client: %w", u.Name, err)
	}
	ctx, stop := context.WithCancel(parent)
	p := &Participant{Name: u.Name, c: c, In: NewInbound(), connected: make(chan struct{}), stop: stop, ctx: ctx}
	_ = c.On(client.RTCConnectEvent, func(any) error {
		p.once.Do(func() { close(p.connected) })
		return nil
	})
	_ = c.On(client.ErrorEvent, func(e any) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		if err, ok := e.(error); ok {
			p.errs = append(p.errs, err)
		}
		return nil
	})
	_ = c.On(client.RTCTrackEvent, func(e any) error {
		m, ok := e.(map[string]any)
		if !ok {
			return nil
		}
		track, ok := m["track"].(*webrtc.TrackRemote)
		if !ok {
			return nil
		}
		go func() {
			for {
				if _, _, err := track.ReadRTP(); err != nil {
					return
				}
				p.In.Packet(track.ID(), track.Kind().String(), time.Now())
			}
		}()
		return nil
	})
	t0 := time.Now()
	if err := c.Connect(); err != nil {
		stop()
		return nil, 0, fmt.Errorf("%s: connect: %w", u.Name, err)
	}
	select {
	case <-p.connected:
		return p, time.Since(t0), nil
	case <-time.After(timeout):
		_ = p.Leave()
		return nil, 0, fmt.Errorf("%s: no media connection within %s (%s)", u.Name, timeout, p.Errors())
	}
}

// Errors is what the client reported, as text.
func (p *Participant) Errors() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.errs) == 0 {
		return "no client errors"
	}
	return fmt.Sprint(p.errs)
}

// Unmute puts the voice track on (added the first time) and keeps it sending.
func (p *Participant) Unmute() error {
	if p.voice == nil {
		t, err := NewVoiceTrack(p.Name)
		if err != nil {
			return err
		}
		p.voice = t
	}
	if err := p.c.Unmute(p.voice); err != nil {
		return fmt.Errorf("%s: unmute: %w", p.Name, err)
	}
	if !p.pumping {
		p.pumping = true
		go PumpVoice(p.ctx, p.voice)
	}
	return nil
}

// Mute tells the call this user is muted (rtcd then stops forwarding the voice).
func (p *Participant) Mute() error {
	if err := p.c.Mute(); err != nil {
		return fmt.Errorf("%s: mute: %w", p.Name, err)
	}
	return nil
}

// ShareScreen starts a VP8 screen share and keeps it sending; the returned func stops it.
func (p *Participant) ShareScreen() (func() error, error) {
	t, err := NewScreenTrack(p.Name)
	if err != nil {
		return nil, err
	}
	if _, err := p.c.StartScreenShare([]webrtc.TrackLocal{t}); err != nil {
		return nil, fmt.Errorf("%s: start screen share: %w", p.Name, err)
	}
	ctx, stop := context.WithCancel(p.ctx)
	go PumpScreen(ctx, t)
	return func() error {
		stop()
		return p.c.StopScreenShare()
	}, nil
}

// Leave ends the participant's call session.
func (p *Participant) Leave() error {
	p.stop()
	return p.c.Close()
}
