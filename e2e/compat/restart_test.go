package compat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestKilledDuringCallsAndRegistrations starts its own rtcd-rs (COMPAT_SERVER_BIN, on other
// ports of the same namespace), holds a call and keeps registering clients, then kills the
// process with SIGKILL in the middle of it all. On restart over the same store: the store
// opens, every client whose registration was acknowledged logs in, the plugin's
// service.Client reconnects by itself (a new hello), and a new call carries media.
func TestKilledDuringCallsAndRegistrations(t *testing.T) {
	base := getEnv(t)
	bin := os.Getenv("COMPAT_SERVER_BIN")
	if bin == "" || !base.ours() {
		t.Skip("COMPAT_SERVER_BIN is not set or the server is not rtcd-rs: run.sh sets it for rtcd-rs")
	}
	dir := t.TempDir()
	const httpPort, icePort = 18145, 18543
	env := testEnv{url: fmt.Sprintf("http://127.0.0.1:%d", httpPort), adminKey: newAuthKey(), skip: map[string]bool{}, label: base.label}
	start := func(t *testing.T, n int) *exec.Cmd {
		t.Helper()
		cmd := exec.Command(bin)
		cmd.Env = []string{
			"PATH=" + os.Getenv("PATH"),
			fmt.Sprintf("RTCD_API_HTTP_LISTENADDRESS=127.0.0.1:%d", httpPort),
			"RTCD_API_SECURITY_ENABLEADMIN=true",
			"RTCD_API_SECURITY_ADMINSECRETKEY=" + env.adminKey,
			fmt.Sprintf("RTCD_RTC_ICEPORTUDP=%d", icePort),
			fmt.Sprintf("RTCD_RTC_ICEPORTTCP=%d", icePort),
			"RTCD_STORE_DATASOURCE=" + filepath.Join(dir, "store"),
			"RTCD_LOGGER_ENABLEFILE=false",
			"RTCD_LOGGER_CONSOLELEVEL=INFO",
		}
		logf, err := os.Create(filepath.Join(dir, fmt.Sprintf("server-%d.log", n)))
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdout, cmd.Stderr = logf, logf
		if err := cmd.Start(); err != nil {
			t.Fatalf("start %s: %v", bin, err)
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
			logf.Close()
			if t.Failed() {
				b, _ := os.ReadFile(logf.Name())
				t.Logf("server log %d:\n%s", n, b)
			}
		})
		waitFor(t, fmt.Sprintf("server %d to answer GET /version", n), 20*time.Second, func() bool {
			st, _ := plainGet(env, "/version")
			return st == http.StatusOK
		})
		return cmd
	}
	first := start(t, 1)

	h := newHarness(t, env)
	step(t, "connect_hello", h, func(t *testing.T) { h.waitHello(t) })
	step(t, "call_media_flows", h, func(t *testing.T) { pairCall(t, h, "A", "B", peerOptions{}) })

	// Registrations from four writers, acknowledged or not, while the process is killed.
	type cred struct{ id, key string }
	var mu sync.Mutex
	var acked []cred
	stop := make(chan struct{})
	var wg sync.WaitGroup
	step(t, "kill_9_during_registrations", h, func(t *testing.T) {
		for w := 0; w < 4; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					c := cred{newID(), newAuthKey()}
					body, _ := json.Marshal(map[string]string{"clientID": c.id, "authKey": c.key})
					st, _ := adminPost(env, "/register", body)
					if st == http.StatusCreated {
						mu.Lock()
						acked = append(acked, c)
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(1500 * time.Millisecond)
		if err := first.Process.Kill(); err != nil {
			t.Fatalf("SIGKILL: %v", err)
		}
		_, _ = first.Process.Wait()
		time.Sleep(200 * time.Millisecond)
		close(stop)
		wg.Wait()
		if len(acked) < 5 {
			t.Fatalf("only %d registrations were acknowledged before the kill", len(acked))
		}
		t.Logf("KILL9 %d registrations acknowledged before SIGKILL", len(acked))
	})

	// Restarted by the test itself (not a step), so that it lives until the test ends.
	start(t, 2)
	step(t, "restart_store_opens_and_every_acknowledged_client_logs_in", h, func(t *testing.T) {
		for _, c := range acked {
			body, _ := json.Marshal(map[string]string{"clientID": c.id, "authKey": c.key})
			if st, resp := plainDo(env, "POST", "/login", body, nil); st != http.StatusOK {
				t.Errorf("client %s, acknowledged before the kill, cannot log in: %d %s", c.id, st, trim(resp))
			}
		}
	})

	step(t, "the_plugin_client_reconnects_and_a_new_call_has_media", h, func(t *testing.T) {
		h.waitReconnected(t, 30*time.Second)
		pairCall(t, h, "C", "D", peerOptions{})
	})
}

// adminPost posts body with the admin key as Basic auth, on a fresh connection.
func adminPost(env testEnv, path string, body []byte) (int, string) {
	req, err := http.NewRequest("POST", env.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	req.SetBasicAuth("admin", env.adminKey)
	hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	var sb bytes.Buffer
	_, _ = sb.ReadFrom(resp.Body)
	return resp.StatusCode, sb.String()
}
