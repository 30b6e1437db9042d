package compat

import (
	"os"
	"testing"

	"github.com/mattermost/rtcd/service"
)

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
	h.checkErrors(t)
}
