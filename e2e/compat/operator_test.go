package compat

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/mattermost/rtcd/service"
)

// Tests that scripts/operator-e2e.sh runs against the rtcd of one fake node; run.sh's suites skip
// them.

// TestConfiguredClient plays the Calls plugin against an rtcd instance that was started after
// the plugin's client was configured (a Secret of the RtcdCluster's spec.clients, mounted in
// the pod), with self-registration off: the plugin's first step, Connect with its client ID and
// auth key, must succeed without any POST /register, and a call must carry media. It needs the
// client's credentials, so only scripts/operator-e2e.sh runs it (COMPAT_CLIENT_ID,
// COMPAT_AUTH_KEY); run.sh's suites skip it.
func TestConfiguredClient(t *testing.T) {
	env := getEnv(t)
	clientID, authKey := os.Getenv("COMPAT_CLIENT_ID"), os.Getenv("COMPAT_AUTH_KEY")
	if clientID == "" || authKey == "" {
		t.Skip("COMPAT_CLIENT_ID / COMPAT_AUTH_KEY are not set; scripts/operator-e2e.sh runs this test")
	}

	// Self-registration is off: a client nobody configured cannot register itself, so the
	// connection below can only succeed because the instance knew the client from its start.
	stranger := newID()
	sc, err := service.NewClient(service.ClientConfig{ClientID: stranger, AuthKey: newAuthKey(), URL: env.url})
	if err != nil {
		t.Fatalf("service.NewClient: %v", err)
	}
	if err := sc.Register(stranger, newAuthKey()); err == nil {
		t.Fatalf("Register(%s) without the admin key succeeded: self-registration is on", stranger)
	}
	bad, err := service.NewClient(service.ClientConfig{ClientID: clientID, AuthKey: newAuthKey(), URL: env.url})
	if err != nil {
		t.Fatalf("service.NewClient: %v", err)
	}
	if err := bad.Connect(); err == nil {
		_ = bad.Close()
		t.Fatalf("Connect as %s with a wrong auth key succeeded", clientID)
	}

	c, err := service.NewClient(service.ClientConfig{ClientID: clientID, AuthKey: authKey, URL: env.url})
	if err != nil {
		t.Fatalf("service.NewClient: %v", err)
	}
	h := connectHarness(t, env, c, clientID, authKey)
	if hello := h.waitHello(t); hello["clientID"] != clientID {
		t.Fatalf("hello clientID = %q, want %q", hello["clientID"], clientID)
	}
	twoPartyCall(t, h)
	h.checkErrors(t)
}

// TestHeldCall holds a two-party call with media on the server until the file COMPAT_HOLD_FILE
// exists or COMPAT_HOLD_SECONDS pass (default 120): the live calls that a node's drain must
// wait for, and that must go on while it does. It fails if media stops while held.
func TestHeldCall(t *testing.T) {
	env := getEnv(t)
	stop := os.Getenv("COMPAT_HOLD_FILE")
	if stop == "" {
		t.Skip("COMPAT_HOLD_FILE is not set; scripts/operator-e2e.sh runs this test")
	}
	env.requireAdmin(t)
	hold := 120 * time.Second
	if v, err := strconv.Atoi(os.Getenv("COMPAT_HOLD_SECONDS")); err == nil && v > 0 {
		hold = time.Duration(v) * time.Second
	}
	h := newHarness(t, env)
	h.waitHello(t)
	peers := twoPartyCall(t, h)
	t.Logf("holding the call until %s exists (at most %s)", stop, hold)
	deadline := time.Now().Add(hold)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(stop); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	checkMedia(t, peers)
	h.checkErrors(t)
}

// twoPartyCall joins two speaking pion peers into a new call and waits until both receive media.
func twoPartyCall(t *testing.T, h *harness) []*peer {
	t.Helper()
	callID, channelID := newID(), newID()
	var peers []*peer
	for i, name := range []string{"A", "B"} {
		p, err := newPeer(h, name, byte('A'+i), true)
		if err != nil {
			t.Fatalf("newPeer(%s): %v", name, err)
		}
		joinAndConnect(t, h, p, callID, channelID)
		peers = append(peers, p)
	}
	checkMedia(t, peers)
	return peers
}

// TestReconnectsAfterRestart plays the Calls plugin across an rtcd restart that someone else
// causes (scripts/node-e2e.sh: kill -9 of rtcd inside its pod, restarted by the kubelet). With
// the configured client (COMPAT_CLIENT_ID, COMPAT_AUTH_KEY) connected and a call carrying media,
// it writes COMPAT_RESTART_FILE.ready and waits for COMPAT_RESTART_FILE (written once the
// container has been restarted); then its service.Client must reconnect by itself (a new hello)
// and a new call must carry media.
func TestReconnectsAfterRestart(t *testing.T) {
	env := getEnv(t)
	file := os.Getenv("COMPAT_RESTART_FILE")
	clientID, authKey := os.Getenv("COMPAT_CLIENT_ID"), os.Getenv("COMPAT_AUTH_KEY")
	if file == "" || clientID == "" || authKey == "" {
		t.Skip("COMPAT_RESTART_FILE / COMPAT_CLIENT_ID / COMPAT_AUTH_KEY are not set; scripts/node-e2e.sh runs this test")
	}
	c, err := service.NewClient(service.ClientConfig{ClientID: clientID, AuthKey: authKey, URL: env.url})
	if err != nil {
		t.Fatalf("service.NewClient: %v", err)
	}
	h := connectHarness(t, env, c, clientID, authKey)
	h.waitHello(t)
	pairCall(t, h, "A", "B", peerOptions{})
	if err := os.WriteFile(file+".ready", nil, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("call up; waiting for %s (the restart)", file)
	waitFor(t, "the restart ("+file+")", 240*time.Second, func() bool {
		_, err := os.Stat(file)
		return err == nil
	})
	h.waitReconnected(t, 60*time.Second)
	pairCall(t, h, "C", "D", peerOptions{})
}
