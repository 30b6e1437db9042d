package compat

import (
	"bufio"
	"encoding/json"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc"
)

// loudLine matches a console log line at WARN or above, in our format
// ("<time>  WARN target: ...") and in rtcd's ("warn  [<time>] ...").
var loudLine = regexp.MustCompile(`^\S+\s+(WARN|ERROR)\s|^(warn|error)\s+\[`)

// logOffset is the server log's current size: where this test's lines start
// (the suite's tests run one at a time).
func logOffset(env testEnv) int64 {
	fi, err := os.Stat(env.serverLog)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// loudSince returns the server log's WARN and ERROR lines written after off.
func loudSince(t *testing.T, env testEnv, off int64) []string {
	t.Helper()
	f, err := os.Open(env.serverLog)
	if err != nil {
		t.Fatalf("server log: %v", err)
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		t.Fatalf("server log: %v", err)
	}
	var loud []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if loudLine.MatchString(sc.Text()) {
			loud = append(loud, sc.Text())
		}
	}
	return loud
}

// TestQuietNormalLife plays a call's whole normal life as the plugin and the
// webapp drive it, and asserts that rtcd-rs logs nothing at WARN or above
// meanwhile (operators alert on those): four joins, media, mute and unmute,
// screen on and off, a leave where the plugin's leave comes first, one where
// the client's own close comes first (then the plugin's leave, twice), the
// plugin disabled and enabled again (a new connection with the same client
// ID and no reconnect), and the host ending the call (the remaining leaves at
// once). On rtcd-rs the closes of that last step reach the new connection;
// rtcd sends them to the dead one, so there they are only reported.
func TestQuietNormalLife(t *testing.T) {
	env := getEnv(t)
	env.requireAdmin(t)
	if env.serverLog == "" {
		t.Skip("COMPAT_SERVER_LOG is not set (run.sh sets it)")
	}
	start := logOffset(env)
	h := newHarness(t, env)
	h.waitHello(t)
	callID, channelID := newID(), newID()

	peers := make([]*peer, 4)
	for i, name := range []string{"A", "B", "C", "D"} {
		p, err := newPeer(h, name, byte('A'+i), i < 2)
		if err != nil {
			t.Fatalf("newPeer(%s): %v", name, err)
		}
		joinAndWait(t, h, p, callID, channelID)
		p.startRTP()
		peers[i] = p
	}
	a, b, c, d := peers[0], peers[1], peers[2], peers[3]
	waitFor(t, "C and D to hear A and B", mediaTimeout, func() bool {
		return c.recv.Load() >= 100 && d.recv.Load() >= 100
	})

	step(t, "mute_unmute", h, func(t *testing.T) {
		for _, typ := range []rtc.MessageType{rtc.MuteMessage, rtc.UnmuteMessage} {
			if err := h.sendRTC(rtc.Message{SessionID: a.sessionID, Type: typ}); err != nil {
				t.Fatalf("send %d: %v", typ, err)
			}
			time.Sleep(300 * time.Millisecond)
		}
		c0 := c.recv.Load()
		waitFor(t, "C to hear A and B again", mediaTimeout, func() bool { return c.recv.Load()-c0 >= 50 })
	})

	step(t, "screen_on_off", h, func(t *testing.T) {
		on, _ := json.Marshal(map[string]string{"screenStreamID": newID()})
		if err := h.sendRTC(rtc.Message{SessionID: b.sessionID, Type: rtc.ScreenOnMessage, Data: on}); err != nil {
			t.Fatalf("send screen on: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
		if err := h.sendRTC(rtc.Message{SessionID: b.sessionID, Type: rtc.ScreenOffMessage}); err != nil {
			t.Fatalf("send screen off: %v", err)
		}
		time.Sleep(300 * time.Millisecond)
	})

	step(t, "leave_plugin_first", h, func(t *testing.T) {
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": a.sessionID})
		h.waitClose(t, a.sessionID, closeTimeout)
		a.close()
	})

	step(t, "leave_client_first", h, func(t *testing.T) {
		b.close()
		time.Sleep(time.Second)
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": b.sessionID})
		h.waitClose(t, b.sessionID, closeTimeout)
		// The plugin may send its leave again; the session is gone by now.
		h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": b.sessionID})
		time.Sleep(300 * time.Millisecond)
	})

	step(t, "plugin_reactivated_host_ends_call", h, func(t *testing.T) {
		c2, err := service.NewClient(service.ClientConfig{ClientID: h.clientID, AuthKey: h.authKey, URL: env.url})
		if err != nil {
			t.Fatalf("NewClient: %v", err)
		}
		h2 := connectHarness(t, env, c2, h.clientID, h.authKey)
		h2.waitHello(t)
		if err := h.client.Close(); err != nil {
			t.Logf("closing the first connection: %v", err)
		}
		// Let the server see the first connection go.
		time.Sleep(time.Second)
		for _, p := range []*peer{c, d} {
			h2.send(t, service.ClientMessageLeave, map[string]string{"sessionID": p.sessionID})
		}
		for _, p := range []*peer{c, d} {
			if env.ours() {
				h2.waitClose(t, p.sessionID, closeTimeout)
				continue
			}
			select {
			case data := <-h2.closeCh:
				t.Logf("%s: close reached the new connection: %v", env.label, data)
			case <-time.After(2 * time.Second):
				t.Logf("%s: no close for %s on the new connection (sent to the join connection)", env.label, p.name)
			}
		}
		for _, p := range []*peer{c, d} {
			p.close()
		}
		time.Sleep(500 * time.Millisecond)
	})

	loud := loudSince(t, env, start)
	if env.ours() && len(loud) > 0 {
		t.Errorf("a normal call's life logged %d lines at WARN or above:\n%s", len(loud), strings.Join(loud, "\n"))
	} else {
		t.Logf("%s: %d lines at WARN or above during a normal call's life", env.label, len(loud))
		for _, l := range loud {
			t.Logf("  %s", l)
		}
	}
}
