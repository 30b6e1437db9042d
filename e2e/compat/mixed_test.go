package compat

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
	"github.com/pion/webrtc/v4"
)

// TestMixedPeer is one half of the browser e2e "mixed" scenario
// (e2e/browser/run.sh with E2E_SCENARIO=mixed); on its own it is skipped.
//
// It joins one pion peer to a call that a Chromium page is in. rtcd groups
// calls by client id (GroupID = the clientID of the WS connection), so the
// peer connects its own WS (service.Client, Basic auth) with the client
// id/auth key the relay registered, as a second Mattermost plugin node of
// the same installation does. It joins MIXED_CALL_ID, sends Opus-shaped RTP
// and counts the Opus packets rtcd forwards from the page.
//
// Machine-readable progress goes to stdout as lines starting with "MIXED ":
//
//	MIXED connected session=<id> pair=<local> -> <remote>
//	MIXED sample <i> sent=<n> recv=<n> other=<n> state=<pc state>
//	MIXED recv-ok recv=<n>        (recv rose over the last three samples, >= MIXED_MIN_PACKETS)
//	MIXED done pass=<bool> ...
//
// The peer keeps sending until its stdin is closed (the browser test closes
// it when the page's checks are over) or MIXED_SECONDS (default 60) pass.
//
// Environment: RTCD_URL, MIXED_CLIENT_ID, MIXED_AUTH_KEY, MIXED_CALL_ID,
// MIXED_CHANNEL_ID, optional MIXED_SECONDS and MIXED_MIN_PACKETS (25).
func TestMixedPeer(t *testing.T) {
	callID := os.Getenv("MIXED_CALL_ID")
	if callID == "" {
		t.Skip("MIXED_CALL_ID is not set; this test is run by e2e/browser/run.sh with E2E_SCENARIO=mixed")
	}
	env := getEnv(t)
	clientID, authKey := os.Getenv("MIXED_CLIENT_ID"), os.Getenv("MIXED_AUTH_KEY")
	if clientID == "" || authKey == "" {
		t.Fatal("MIXED_CLIENT_ID and MIXED_AUTH_KEY must be set (the relay's registered client)")
	}
	channelID := os.Getenv("MIXED_CHANNEL_ID")
	if channelID == "" {
		channelID = newID()
	}
	seconds := envInt("MIXED_SECONDS", 60)
	minPackets := int64(envInt("MIXED_MIN_PACKETS", 25))

	c, err := service.NewClient(service.ClientConfig{ClientID: clientID, AuthKey: authKey, URL: env.url})
	if err != nil {
		t.Fatalf("service.NewClient: %v", err)
	}
	h := connectHarness(t, env, c, clientID, authKey)
	hello := h.waitHello(t)
	fmt.Printf("MIXED hello %v\n", hello)

	p, err := newPeer(h, "P", 'P', true)
	if err != nil {
		t.Fatalf("newPeer: %v", err)
	}
	p.anyOpus = true // set before the join: no track can arrive yet

	h.send(t, service.ClientMessageJoin, p.joinMsg(callID, channelID))
	if err := p.offer(); err != nil {
		t.Fatalf("offer: %v", err)
	}
	select {
	case <-p.connectedCh:
	case <-time.After(connectTimeout):
		t.Fatalf("peer connection not connected within %s (%s)", connectTimeout, p)
	}
	h.checkErrors(t)
	p.startRTP()
	fmt.Printf("MIXED connected session=%s pair=%s\n", p.sessionID, selectedPair(p.pc))

	eof := make(chan struct{})
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		close(eof)
	}()

	var series []int64
	passed := false
	deadline := time.After(time.Duration(seconds) * time.Second)
	ticker := time.NewTicker(time.Second)
	defer ticker.Stop()
	stopReason := ""
loop:
	for i := 1; ; i++ {
		select {
		case <-eof:
			stopReason = "stdin closed"
			break loop
		case <-deadline:
			stopReason = fmt.Sprintf("%ds passed", seconds)
			break loop
		case <-ticker.C:
		}
		recv := p.recv.Load()
		series = append(series, recv)
		fmt.Printf("MIXED sample %d sent=%d recv=%d other=%d state=%s\n", i, p.sent.Load(), recv, p.recvOther.Load(), p.pc.ConnectionState())
		if n := len(series); !passed && n >= 3 && series[n-3] < series[n-2] && series[n-2] < series[n-1] && series[n-1] >= minPackets {
			passed = true
			fmt.Printf("MIXED recv-ok recv=%d\n", recv)
		}
		h.mu.Lock()
		nerr := len(h.errs)
		h.mu.Unlock()
		if nerr > 0 {
			stopReason = "async error"
			break loop
		}
	}
	fmt.Printf("MIXED done pass=%v stop=%q sent=%d recv=%d other=%d pair=%s series=%v\n",
		passed, stopReason, p.sent.Load(), p.recv.Load(), p.recvOther.Load(), selectedPair(p.pc), series)

	h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": p.sessionID})
	h.checkErrors(t)
	if !passed {
		t.Fatalf("pion peer did not receive growing Opus RTP from the page (>= %d packets, rising over 3 samples): %v", minPackets, series)
	}
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// selectedPair describes the peer's selected ICE candidate pair.
func selectedPair(pc *webrtc.PeerConnection) string {
	sctp := pc.SCTP()
	if sctp == nil || sctp.Transport() == nil {
		return "none"
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil {
		return "none"
	}
	cand := func(c *webrtc.ICECandidate) string {
		s := fmt.Sprintf("%s %s:%d %s", c.Protocol, c.Address, c.Port, c.Typ)
		if c.TCPType != "" {
			s += " " + c.TCPType
		}
		return s
	}
	return fmt.Sprintf("%s -> %s", cand(pair.Local), cand(pair.Remote))
}
