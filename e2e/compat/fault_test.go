package compat

import (
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
)

// TestPanicContained: a session whose handling panics inside the server is
// dropped alone. The others in its call keep sending and receiving, a new
// participant can still join, the panic is counted in
// rtcd_rtc_errors_total{type="panic"}, and /api/v1/health stays ok.
//
// It needs a server that can inject the fault: rtcd-rs built with the
// fault-injection feature (never a release build) and started with
// RTCD_FAULT_PANIC_USER=<user>, which makes that user's session panic on its
// first datagram once connected. scripts/compat.sh does that for rtcd-rs and
// passes the same user as COMPAT_FAULT_USER; without it the test is skipped
// (the reference rtcd has no such hook).
func TestPanicContained(t *testing.T) {
	faultUser := os.Getenv("COMPAT_FAULT_USER")
	if faultUser == "" {
		t.Skip("COMPAT_FAULT_USER is not set: the server cannot inject a panic")
	}
	env := getEnv(t)
	h := newHarness(t, env)
	h.waitHello(t)
	callID, channelID := newID(), newID()

	mk := func(name string, tag byte, speaking bool) *peer {
		p, err := newPeer(h, name, tag, speaking)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		return p
	}
	a, b := mk("A", 'A', true), mk("B", 'B', true)
	joinAndConnect(t, h, a, callID, channelID)
	joinAndConnect(t, h, b, callID, channelID)
	checkMedia(t, []*peer{a, b})

	// C's session panics in the server as soon as it is connected.
	c := mk("C", 'C', false)
	c.userID = faultUser
	h.send(t, service.ClientMessageJoin, c.joinMsg(callID, channelID))
	if err := c.offer(); err != nil {
		t.Fatalf("C: offer: %v", err)
	}
	h.waitClose(t, c.sessionID, 20*time.Second)
	c.close()
	t.Logf("C's session was closed by the server")

	checkMedia(t, []*peer{a, b})

	_, _, body := env.rawRequest(t, http.MethodGet, "/metrics", nil, "", "")
	want := fmt.Sprintf(`rtcd_rtc_errors_total{groupID="%s",type="panic"} 1`, h.clientID)
	if !strings.Contains(string(body), want+"\n") {
		var got []string
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasPrefix(l, "rtcd_rtc_errors_total") {
				got = append(got, l)
			}
		}
		t.Errorf("metrics: want %q, have %q", want, got)
	}
	code, _, hb := env.rawRequest(t, http.MethodGet, "/api/v1/health", nil, "", "")
	if code != http.StatusOK || !strings.Contains(string(hb), `"status":"ok"`) {
		t.Errorf("health after the panic: %d %s, want 200 ok", code, hb)
	}

	// The call goes on: a new participant joins and everyone hears everyone.
	d := mk("D", 'D', true)
	joinAndConnect(t, h, d, callID, channelID)
	checkMedia(t, []*peer{a, b, d})
	h.checkErrors(t)
}
