package compat

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
)

// TestCloseJoins: five talking participants join one call 20 ms apart (each
// sends its join and offer without waiting for the previous one to connect),
// so the server's renegotiations of one participant overlap the next joins.
// Every participant must then hear every other one. The in-memory harness
// (rtcd::sim) saw a str0m client lose a track in such an order; this is the
// same order with pion peers against both servers.
func TestCloseJoins(t *testing.T) {
	env := getEnv(t)
	h := newHarness(t, env)
	h.waitHello(t)
	callID, channelID := newID(), newID()
	var peers []*peer
	for i := 0; i < 5; i++ {
		p, err := newPeer(h, fmt.Sprintf("J%d", i), byte('a'+i), true)
		if err != nil {
			t.Fatalf("J%d: %v", i, err)
		}
		peers = append(peers, p)
		h.send(t, service.ClientMessageJoin, p.joinMsg(callID, channelID))
		if err := p.offer(); err != nil {
			t.Fatalf("%s: offer: %v", p.name, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, p := range peers {
		select {
		case <-p.connectedCh:
		case <-time.After(connectTimeout):
			t.Fatalf("%s: not connected within %s (%s)", p.name, connectTimeout, p)
		}
		p.startRTP()
	}
	const want = 40 // packets from each other participant (≈ 0.8 s of voice)
	deadline := time.Now().Add(8 * time.Second)
	for {
		var missing []string
		for _, p := range peers {
			for _, q := range peers {
				if p != q && p.recvByTag[q.tag].Load() < want {
					missing = append(missing, fmt.Sprintf("%s<-%s:%d", p.name, q.name, p.recvByTag[q.tag].Load()))
				}
			}
		}
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			for _, p := range peers {
				t.Logf("%s", p)
			}
			t.Fatalf("not every participant hears every other one within 8 s (want %d packets each): %s", want, strings.Join(missing, " "))
		}
		time.Sleep(50 * time.Millisecond)
	}
	h.checkErrors(t)
}
