package compat

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/mattermost/rtcd/service"
	"github.com/mattermost/rtcd/service/rtc"
	"github.com/vmihailenco/msgpack/v5"
)

// The limits TestHostile expects the server to run with (scripts/compat.sh sets them through
// COMPAT_SERVER_ENV for the hostile run).
const (
	hostileReadTimeout   = 2 * time.Second // RTCD_LIMITS_HTTPREADTIMEOUT=2s
	hostileWriteTimeout  = 2 * time.Second // RTCD_LIMITS_HTTPWRITETIMEOUT=2s
	hostileConnsPerIP    = 30              // RTCD_LIMITS_HTTPMAXCONNECTIONSPERIP=30
	hostileSessions      = 4               // RTCD_LIMITS_SESSIONSPERCLIENT=4
	hostileCandidates    = 20              // RTCD_LIMITS_CANDIDATESPERSESSION=20
	hostileTCPPerIP      = 8               // RTCD_LIMITS_ICETCPMAXUNAUTHENTICATEDPERIP=8
	hostileClientsFailed = 10              // rtcd-rs: failed logins per client ID a minute
)

// TestHostile throws at rtcd-rs what an attacker on the internet can: slowloris, a client
// that stops reading, a connection
// flood, a huge client ID, a concurrent password-guessing burst, invented WS message types,
// too many sessions for one client, too many ICE candidates, and an ICE-TCP flood from one
// address while a peer from another address connects over ICE-TCP. For each it checks the
// clear error, the counter in rtcd_limit_refusals_total, and that a call of two peers in the
// same process keeps its media throughout. Only for rtcd-rs (the limits are ours).
func TestHostile(t *testing.T) {
	env := getEnv(t)
	if os.Getenv("COMPAT_HOSTILE") == "" {
		t.Skip("COMPAT_HOSTILE is not set: scripts/compat.sh runs this test with small limits")
	}
	env.requireAdmin(t)
	h := newHarness(t, env)
	step(t, "connect_hello", h, func(t *testing.T) { h.waitHello(t) })

	var a, b *peer
	step(t, "call_media_flows", h, func(t *testing.T) { a, b = pairCall(t, h, "A", "B", peerOptions{}) })
	call := func() []*peer { return []*peer{a, b} }

	// During each attack the call's media is checked again and again; after it, once more.
	during := func(t *testing.T, attack func(t *testing.T)) {
		t.Helper()
		stop := make(chan struct{})
		stalled := make(chan string, 1)
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			last := []int64{a.recv.Load(), b.recv.Load()}
			for {
				select {
				case <-stop:
					return
				case <-time.After(mediaCheckTimeout):
				}
				now := []int64{a.recv.Load(), b.recv.Load()}
				if now[0]-last[0] < mediaGrowth || now[1]-last[1] < mediaGrowth {
					select {
					case stalled <- fmt.Sprintf("A +%d, B +%d within %s", now[0]-last[0], now[1]-last[1], mediaCheckTimeout):
					default:
					}
				}
				last = now
			}
		}()
		attack(t)
		close(stop)
		wg.Wait()
		select {
		case s := <-stalled:
			t.Fatalf("the call's media stalled during the attack: %s", s)
		default:
		}
		checkMedia(t, call())
	}

	step(t, "slowloris", h, func(t *testing.T) {
		before := refusals(t, env, "http_read_timeout")
		during(t, func(t *testing.T) {
			const n = 20
			var wg sync.WaitGroup
			closedAfter := make(chan time.Duration, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c, err := net.Dial("tcp", hostOf(t, env))
					if err != nil {
						t.Errorf("dial: %v", err)
						return
					}
					defer c.Close()
					start := time.Now()
					if _, err := io.WriteString(c, "GET /version HTTP/1.1\r\nHost: rtcd\r\n"); err != nil {
						t.Errorf("write: %v", err)
						return
					}
					// One more header byte every 300 ms, never the blank line: a slowloris.
					for time.Since(start) < 4*hostileReadTimeout {
						time.Sleep(300 * time.Millisecond)
						if _, err := io.WriteString(c, "X"); err != nil {
							break
						}
						_ = c.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
						var buf [64]byte
						if _, err := c.Read(buf[:]); err != nil && !isTimeout(err) {
							break
						}
					}
					closedAfter <- time.Since(start)
				}()
			}
			wg.Wait()
			close(closedAfter)
			for d := range closedAfter {
				if d >= 4*hostileReadTimeout {
					t.Errorf("a slowloris connection was still open after %s (read timeout %s)", d, hostileReadTimeout)
				}
			}
		})
		if got := refusals(t, env, "http_read_timeout") - before; got < 20 {
			t.Errorf("rtcd_limit_refusals_total{limit=http_read_timeout} rose by %v, want >= 20", got)
		}
		t.Logf("HOSTILE slowloris: 20 connections closed within %s", 4*hostileReadTimeout)
	})

	step(t, "a_client_that_stops_reading", h, func(t *testing.T) {
		// Pipelined GET /metrics, never read: the responses fill the socket buffers, the
		// server's writes stall, and the connection is cut after http_write_timeout.
		before := refusals(t, env, "http_write_timeout")
		during(t, func(t *testing.T) {
			c, err := net.Dial("tcp", hostOf(t, env))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetReadBuffer(4096)
			}
			req := []byte("GET /metrics HTTP/1.1\r\nHost: rtcd\r\n\r\n")
			start := time.Now()
			_ = c.SetWriteDeadline(time.Now().Add(3 * hostileWriteTimeout))
			for i := 0; i < 5000; i++ {
				if _, err := c.Write(req); err != nil {
					break
				}
			}
			waitFor(t, "the stalled connection to be cut and counted", 4*hostileWriteTimeout, func() bool {
				return refusals(t, env, "http_write_timeout") > before
			})
			t.Logf("HOSTILE a client that stops reading: cut after %s", time.Since(start).Round(100*time.Millisecond))
		})
	})

	step(t, "connection_flood_from_one_address", h, func(t *testing.T) {
		before := refusals(t, env, "http_max_connections_per_ip")
		var refusal string
		during(t, func(t *testing.T) {
			var held []net.Conn
			defer func() {
				for _, c := range held {
					c.Close()
				}
			}()
			refused := 0
			for i := 0; i < hostileConnsPerIP+10; i++ {
				c, err := net.Dial("tcp", hostOf(t, env))
				if err != nil {
					t.Fatalf("dial %d: %v", i, err)
				}
				held = append(held, c)
				_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
				b, _ := io.ReadAll(c)
				if len(b) > 0 {
					refused++
					refusal = string(b)
				}
			}
			if refused < 10 {
				t.Errorf("only %d of %d connections past the per-address cap were refused", refused, hostileConnsPerIP+10)
			}
			if !strings.HasPrefix(refusal, "HTTP/1.1 503") || !strings.Contains(refusal, "limits.http_max") {
				t.Errorf("the refusal is not a clear 503: %q", refusal)
			}
		})
		if got := refusals(t, env, "http_max_connections_per_ip") - before; got < 10 {
			t.Errorf("rtcd_limit_refusals_total{limit=http_max_connections_per_ip} rose by %v, want >= 10", got)
		}
		// Once the flood is gone, requests are served again.
		waitFor(t, "GET /version to answer 200 again", 5*time.Second, func() bool {
			st, _ := plainGet(env, "/version")
			return st == http.StatusOK
		})
		t.Logf("HOSTILE connection flood: refused with %q", firstLine(refusal))
	})

	step(t, "huge_client_id", h, func(t *testing.T) {
		before := refusals(t, env, "client_id_length")
		during(t, func(t *testing.T) {
			for _, n := range []int{1 << 20, 2 << 20} {
				body, _ := json.Marshal(map[string]string{"clientID": strings.Repeat("x", n), "authKey": "y"})
				st, resp := plainDo(env, "POST", "/login", body, nil)
				switch {
				case n < 2<<20 && (st != http.StatusBadRequest || !strings.Contains(resp, "client ID")):
					t.Errorf("login with a %d-byte client ID: %d %q, want 400 naming the client ID", n, st, trim(resp))
				case n >= 2<<20 && st != http.StatusBadRequest && st != http.StatusRequestEntityTooLarge:
					t.Errorf("login with a %d-byte client ID: %d %q, want 400 or 413", n, st, trim(resp))
				}
				t.Logf("HOSTILE %d-byte client ID: %d %s", n, st, trim(resp))
			}
		})
		if got := refusals(t, env, "client_id_length") - before; got < 1 {
			t.Errorf("rtcd_limit_refusals_total{limit=client_id_length} did not rise")
		}
	})

	step(t, "concurrent_wrong_password_burst", h, func(t *testing.T) {
		// From another address (127.0.0.2), so the lockout does not touch the harness's; fewer
		// at once than limits.http_max_connections_per_ip, so every one reaches the limiter.
		before := refusals(t, env, "auth_attempts")
		const n = hostileConnsPerIP - 5
		statuses := map[int]int{}
		during(t, func(t *testing.T) {
			var mu sync.Mutex
			var wg sync.WaitGroup
			start := make(chan struct{})
			victim := newID()
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					body, _ := json.Marshal(map[string]string{"clientID": victim, "authKey": newAuthKey()})
					st, _ := plainDo(env, "POST", "/login", body, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)})
					mu.Lock()
					statuses[st]++
					mu.Unlock()
				}()
			}
			close(start)
			wg.Wait()
		})
		t.Logf("HOSTILE %d concurrent wrong-password logins: statuses %v", n, statuses)
		if statuses[http.StatusTooManyRequests] != n-hostileClientsFailed {
			t.Errorf("%d of %d concurrent guesses were refused with 429, want %d (only %d may reach the hash)",
				statuses[http.StatusTooManyRequests], n, n-hostileClientsFailed, hostileClientsFailed)
		}
		// The ten that passed the limiter were hashed one at a time (limits.auth_max_concurrent_hashes):
		// a wrong key (400), or, for the last in line, the 2 s handler deadline (503).
		if passed := statuses[http.StatusBadRequest] + statuses[http.StatusServiceUnavailable]; passed != hostileClientsFailed {
			t.Errorf("%d guesses passed the limiter, want %d: %v", passed, hostileClientsFailed, statuses)
		}
		if got := refusals(t, env, "auth_attempts") - before; got < n-hostileClientsFailed {
			t.Errorf("rtcd_limit_refusals_total{limit=auth_attempts} rose by %v, want >= %d", got, n-hostileClientsFailed)
		}
		// The harness's client, from its own address, still logs in.
		body, _ := json.Marshal(map[string]string{"clientID": h.clientID, "authKey": h.authKey})
		if st, resp := plainDo(env, "POST", "/login", body, nil); st != http.StatusOK {
			t.Errorf("the real client's login after the burst: %d %s", st, trim(resp))
		}
	})

	step(t, "invented_ws_message_types", h, func(t *testing.T) {
		during(t, func(t *testing.T) {
			rc := dialRawWS(t, env.url, h.clientID, h.authKey)
			defer rc.close()
			for i := 0; i < 10000; i++ {
				frame, err := msgpack.Marshal(fmt.Sprintf("evil-%d", i))
				if err != nil {
					t.Fatal(err)
				}
				nilData, _ := msgpack.Marshal(nil)
				if err := rc.write(websocket.BinaryMessage, append(frame, nilData...)); err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
			}
			if r := rc.probe(wsProbeTimeout); !strings.HasPrefix(r, "open") {
				t.Fatalf("the raw WS after 10 000 invented types: %s", r)
			}
		})
		types := wsMessageTypes(t, env)
		for ty := range types {
			if strings.HasPrefix(ty, "evil-") {
				t.Fatalf("an invented type became a metric label: %q", ty)
			}
		}
		if types["unknown"] < 10000 {
			t.Errorf("rtcd_ws_messages_total{type=unknown,direction=in} = %v, want >= 10000", types["unknown"])
		}
		t.Logf("HOSTILE 10 000 invented WS types: labels %v", keysOf(types))
	})

	step(t, "sessions_per_client", h, func(t *testing.T) {
		before := refusals(t, env, "sessions_per_client")
		during(t, func(t *testing.T) {
			// A and B hold two of the client's sessions; two more fit.
			extra := []string{newID(), newID()}
			for _, sid := range extra {
				h.send(t, service.ClientMessageJoin, map[string]any{
					"callID": newID(), "userID": newID(), "sessionID": sid, "channelID": newID(),
					"av1Support": false, "dcSignaling": false,
				})
			}
			over := newID()
			h.send(t, service.ClientMessageJoin, map[string]any{
				"callID": newID(), "userID": newID(), "sessionID": over, "channelID": newID(),
				"av1Support": false, "dcSignaling": false,
			})
			h.waitClose(t, over, 2*time.Second)
			for _, sid := range extra {
				h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": sid})
				h.waitClose(t, sid, 5*time.Second)
			}
			// Their places are free again: a new join is not refused.
			again := newID()
			h.send(t, service.ClientMessageJoin, map[string]any{
				"callID": newID(), "userID": newID(), "sessionID": again, "channelID": newID(),
				"av1Support": false, "dcSignaling": false,
			})
			select {
			case data := <-h.closeCh:
				t.Fatalf("a join within the limit was closed at once: %v", data)
			case <-time.After(time.Second):
			}
			h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": again})
			h.waitClose(t, again, 5*time.Second)
		})
		if got := refusals(t, env, "sessions_per_client") - before; got != 1 {
			t.Errorf("rtcd_limit_refusals_total{limit=sessions_per_client} rose by %v, want 1", got)
		}
	})

	step(t, "candidates_per_session", h, func(t *testing.T) {
		before := refusals(t, env, "candidates_per_session")
		during(t, func(t *testing.T) {
			// Host candidates on loopback ports nothing listens on: checks go nowhere else.
			for i := 0; i < 2*hostileCandidates; i++ {
				c := fmt.Sprintf("candidate:%d 1 udp 2130706431 127.0.0.1 %d typ host", 900+i, 40000+i)
				data, _ := json.Marshal(map[string]any{"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0})
				if err := h.sendRTC(rtc.Message{SessionID: a.sessionID, Type: rtc.ICEMessage, Data: data}); err != nil {
					t.Fatal(err)
				}
			}
			time.Sleep(time.Second)
		})
		if got := refusals(t, env, "candidates_per_session") - before; got < hostileCandidates {
			t.Errorf("rtcd_limit_refusals_total{limit=candidates_per_session} rose by %v, want >= %d", got, hostileCandidates)
		}
	})

	step(t, "ice_tcp_flood_while_another_address_joins_over_tcp", h, func(t *testing.T) {
		before := refusals(t, env, "ice_tcp_max_unauthenticated_per_ip")
		iceTCP := iceAddr(t)
		var c, d *peer
		during(t, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			// 127.0.0.2 keeps opening ICE-TCP connections that never speak ICE.
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}, Timeout: time.Second}
				var held []net.Conn
				defer func() {
					for _, c := range held {
						c.Close()
					}
				}()
				for ctx.Err() == nil && len(held) < 400 {
					conn, err := dialer.DialContext(ctx, "tcp", iceTCP)
					if err == nil {
						held = append(held, conn)
					}
					time.Sleep(5 * time.Millisecond)
				}
				<-ctx.Done()
			}()
			// Meanwhile two peers on 127.0.0.1 connect over ICE-TCP only.
			c, d = pairCall(t, h, "C", "D", peerOptions{tcpOnly: true})
			cancel()
			wg.Wait()
			// Their places under limits.sessions_per_client are needed by the next step.
			for _, p := range []*peer{c, d} {
				h.send(t, service.ClientMessageLeave, map[string]string{"sessionID": p.sessionID})
				h.waitClose(t, p.sessionID, 5*time.Second)
				p.close()
			}
		})
		if got := refusals(t, env, "ice_tcp_max_unauthenticated_per_ip") - before; got < 1 {
			t.Errorf("rtcd_limit_refusals_total{limit=ice_tcp_max_unauthenticated_per_ip} did not rise")
		}
		t.Logf("HOSTILE ICE-TCP flood from 127.0.0.2: C and D connected over TCP from 127.0.0.1 and left")
	})
	step(t, "spoofed_dtls_clienthello_before_the_real_one", h, func(t *testing.T) {
		// While E and F join and connect, 127.0.0.2 sends DTLS ClientHellos to the media
		// port, and STUN checks that name the server's ufrag with a wrong integrity, from
		// before the join until both are connected: the spoofed handshakes come first.
		before := metricValue(t, env, `rtcd_net_dropped_total{transport="udp",reason="no_session"}`)
		var e, f *peer
		var sent, withUfrag int
		during(t, func(t *testing.T) {
			var err error
			if e, err = newPeer(h, "E", 'E', false); err != nil {
				t.Fatal(err)
			}
			if f, err = newPeer(h, "F", 'F', false); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			udp, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 2)})
			if err != nil {
				t.Fatal(err)
			}
			defer udp.Close()
			target, err := net.ResolveUDPAddr("udp4", iceAddr(t))
			if err != nil {
				t.Fatal(err)
			}
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < 5000 && ctx.Err() == nil; i++ {
					ufrag := ""
					if rd := e.pc.RemoteDescription(); rd != nil {
						ufrag = sdpAttr(rd.SDP, "ice-ufrag")
					}
					if ufrag != "" {
						_, _ = udp.WriteToUDP(badStunCheck(ufrag), target)
						withUfrag++
					}
					_, _ = udp.WriteToUDP(dtlsClientHello(), target)
					sent++
					time.Sleep(2 * time.Millisecond)
				}
			}()
			call3, ch3 := newID(), newID()
			joinAndConnect(t, h, e, call3, ch3)
			joinAndConnect(t, h, f, call3, ch3)
			waitFor(t, "E and F to each receive >= 50 RTP packets", mediaTimeout, func() bool {
				return e.recv.Load() >= 50 && f.recv.Load() >= 50
			})
			cancel()
			wg.Wait()
		})
		if sent < 10 || withUfrag < 1 {
			t.Fatalf("the attack did not run: %d ClientHellos, %d checks with the server's ufrag", sent, withUfrag)
		}
		dropped := metricValue(t, env, `rtcd_net_dropped_total{transport="udp",reason="no_session"}`) - before
		if dropped < float64(sent) {
			t.Errorf("rtcd_net_dropped_total{udp,no_session} rose by %v for %d spoofed ClientHellos and %d checks", dropped, sent, withUfrag)
		}
		t.Logf("HOSTILE spoofed DTLS: %d ClientHellos and %d bad checks from 127.0.0.2 dropped (%v counted); E and F connected: %s, %s", sent, withUfrag, dropped, e, f)
	})
}

// metricValue reads one series (its full name with labels, as exposed) from /metrics.
func metricValue(t *testing.T, env testEnv, series string) float64 {
	t.Helper()
	_, body := plainGet(env, "/metrics")
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", series)
	return 0
}

// sdpAttr is the first a=<name>: value in an SDP.
func sdpAttr(sdp, name string) string {
	for _, line := range strings.Split(sdp, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "a="+name+":"); ok {
			return v
		}
	}
	return ""
}

// badStunCheck is a Binding request naming the server's ufrag, with a MESSAGE-INTEGRITY that
// is not the HMAC of the password (an attacker who saw the ufrag, not the password).
func badStunCheck(serverUfrag string) []byte {
	user := []byte(serverUfrag + ":evil")
	pad := (4 - len(user)%4) % 4
	attrs := []byte{0x00, 0x06, byte(len(user) >> 8), byte(len(user))}
	attrs = append(attrs, user...)
	attrs = append(attrs, make([]byte, pad)...)
	attrs = append(attrs, 0x00, 0x08, 0x00, 0x14)
	attrs = append(attrs, bytes.Repeat([]byte{0xaa}, 20)...)
	msg := []byte{0x00, 0x01, byte(len(attrs) >> 8), byte(len(attrs)), 0x21, 0x12, 0xa4, 0x42}
	msg = append(msg, []byte("spoofedtxid1")...)
	return append(msg, attrs...)
}

// dtlsClientHello is a DTLS 1.2 ClientHello record (epoch 0, no cookie) offering
// TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256.
func dtlsClientHello() []byte {
	body := []byte{0xfe, 0xfd}
	body = append(body, bytes.Repeat([]byte{0x42}, 32)...) // random
	body = append(body, 0x00)                              // session id
	body = append(body, 0x00)                              // cookie
	body = append(body, 0x00, 0x02, 0xc0, 0x2b)            // cipher suites
	body = append(body, 0x01, 0x00)                        // compression: null
	n := len(body)
	hs := []byte{0x01, 0x00, byte(n >> 8), byte(n), 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, byte(n >> 8), byte(n)}
	hs = append(hs, body...)
	rec := []byte{0x16, 0xfe, 0xfd, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, byte(len(hs) >> 8), byte(len(hs))}
	return append(rec, hs...)
}

// pairCall joins two fresh peers named x and y (with opts) into a new call over the main WS,
// and waits until each receives >= 50 RTP packets from the other.
func pairCall(t *testing.T, h *harness, x, y string, opts peerOptions) (*peer, *peer) {
	t.Helper()
	p, err := newPeerWith(h, x, x[0], false, opts)
	if err != nil {
		t.Fatal(err)
	}
	q, err := newPeerWith(h, y, y[0], false, opts)
	if err != nil {
		t.Fatal(err)
	}
	callID, chID := newID(), newID()
	joinAndConnect(t, h, p, callID, chID)
	joinAndConnect(t, h, q, callID, chID)
	waitFor(t, fmt.Sprintf("%s and %s to each receive >= 50 RTP packets", x, y), mediaTimeout, func() bool {
		return p.recv.Load() >= 50 && q.recv.Load() >= 50
	})
	return p, q
}

// refusals reads rtcd_limit_refusals_total{limit=...} from /metrics.
func refusals(t *testing.T, env testEnv, limit string) float64 {
	t.Helper()
	st, body := plainGet(env, "/metrics")
	if st != http.StatusOK {
		t.Fatalf("GET /metrics: %d", st)
	}
	prefix := fmt.Sprintf(`rtcd_limit_refusals_total{limit="%s"} `, limit)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	t.Fatalf("/metrics has no %s", strings.TrimSpace(prefix))
	return 0
}

var wsTypeRe = regexp.MustCompile(`^rtcd_ws_messages_total\{([^}]*)\} (\S+)`)

// wsMessageTypes sums rtcd_ws_messages_total{direction="in"} by type.
func wsMessageTypes(t *testing.T, env testEnv) map[string]float64 {
	t.Helper()
	_, body := plainGet(env, "/metrics")
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		m := wsTypeRe.FindStringSubmatch(line)
		if m == nil || !strings.Contains(m[1], `direction="in"`) {
			continue
		}
		ty := regexp.MustCompile(`type="([^"]*)"`).FindStringSubmatch(m[1])
		if ty == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[2], 64)
		out[ty[1]] += v
	}
	return out
}

func hostOf(t *testing.T, env testEnv) string {
	t.Helper()
	u, err := url.Parse(env.url)
	if err != nil {
		t.Fatal(err)
	}
	return u.Host
}

// iceAddr is the server's ICE-TCP address inside the namespace (run.sh's RTCD_ICE_PORT).
func iceAddr(t *testing.T) string {
	t.Helper()
	port := os.Getenv("RTCD_ICE_PORT")
	if port == "" {
		port = "8443"
	}
	return net.JoinHostPort("127.0.0.1", port)
}

// plainDo sends one request on a fresh connection (no keep-alive), from local when set.
func plainDo(env testEnv, method, path string, body []byte, local *net.TCPAddr) (int, string) {
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	if local != nil {
		dialer.LocalAddr = local
	}
	hc := &http.Client{Timeout: 15 * time.Second, Transport: &http.Transport{DisableKeepAlives: true, DialContext: dialer.DialContext}}
	req, err := http.NewRequest(method, env.url+path, bytes.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

func plainGet(env testEnv, path string) (int, string) { return plainDo(env, "GET", path, nil, nil) }

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func trim(s string) string {
	if len(s) > 120 {
		return s[:120] + "…"
	}
	return strings.TrimSpace(s)
}

func firstLine(s string) string {
	line, _, _ := bufio.NewReader(strings.NewReader(s)).ReadLine()
	return string(line)
}
