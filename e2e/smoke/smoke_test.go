// Unit tests of the smoke suite's pieces that need no Mattermost server: the preflight
// verdict, the rtcd URL and its credentials, the plugin's and rtcd's session lists and their
// comparison, the report, and the synthetic media.
package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestJudgeSaysPlainlyWhenCallsCannotReachRTCD(t *testing.T) {
	ok := ServerFacts{Licensed: true, SKU: "enterprise", PluginState: "running", RTCDServiceURL: "http://id:key@rtcd:8045"}
	if v := Judge(ok, false); len(v.Problems) != 0 {
		t.Fatalf("an Enterprise server with the plugin running and an RTCD URL: %v", v.Problems)
	}
	dev := ServerFacts{EnableDeveloper: true, EnableTesting: true, PluginState: "running", RTCDServiceURL: "http://rtcd:8045"}
	if v := Judge(dev, false); len(v.Problems) != 0 || !strings.Contains(strings.Join(v.Notes, " "), "developer mode") {
		t.Fatalf("developer mode without a licence should pass with a note: %+v", v)
	}
	cases := map[string]struct {
		f    ServerFacts
		want string
	}{
		"no licence, no dev mode": {ServerFacts{PluginState: "running", RTCDServiceURL: "http://rtcd:8045"}, "embedded SFU"},
		"only EnableDeveloper":    {ServerFacts{EnableDeveloper: true, PluginState: "running", RTCDServiceURL: "http://rtcd:8045"}, "embedded SFU"},
		"professional licence":    {ServerFacts{Licensed: true, SKU: "professional", PluginState: "running", RTCDServiceURL: "http://rtcd:8045"}, "not Enterprise"},
		"no plugin":               {ServerFacts{Licensed: true, SKU: "enterprise", RTCDServiceURL: "http://rtcd:8045"}, "not installed"},
		"plugin failed":           {ServerFacts{Licensed: true, SKU: "enterprise", PluginState: "failed (boom)", RTCDServiceURL: "http://rtcd:8045"}, "failed (boom)"},
		"no RTCD URL":             {ServerFacts{Licensed: true, SKU: "enterprise", PluginState: "running"}, "no RTCD Service URL"},
	}
	for name, c := range cases {
		v := Judge(c.f, false)
		if !strings.Contains(strings.Join(v.Problems, " | "), c.want) {
			t.Errorf("%s: problems %q, want one saying %q", name, v.Problems, c.want)
		}
	}
	// An RTCD URL given on the command line covers one set only in the server's environment.
	if v := Judge(ServerFacts{Licensed: true, SKU: "enterprise", PluginState: "running"}, true); len(v.Problems) != 0 {
		t.Fatalf("with -rtcd-url the empty plugin setting is a note: %v", v.Problems)
	}
}

func TestParseRTCDURLTakesTheCredentialsFromTheURLOrTheFlags(t *testing.T) {
	got, err := ParseRTCDURL("https://cid:secret@rtcd.example.com:8045", "", "")
	if err != nil || got != (RTCDTarget{Base: "https://rtcd.example.com:8045", ClientID: "cid", AuthKey: "secret"}) {
		t.Fatalf("credentials in the URL: %+v, %v", got, err)
	}
	got, err = ParseRTCDURL("http://rtcd:8045", "flagid", "flagkey")
	if err != nil || got.ClientID != "flagid" || got.AuthKey != "flagkey" || got.Base != "http://rtcd:8045" {
		t.Fatalf("credentials from flags: %+v, %v", got, err)
	}
	for _, bad := range []string{"rtcd:8045", "ftp://rtcd", "http://", "http://rtcd:8045"} {
		if _, err := ParseRTCDURL(bad, "", ""); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	if _, err := ParseRTCDURL("http://id:topsecret@rtcd:8045/x", "", "y"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseRTCDURL("http://id@rtcd:8045", "", ""); err == nil || strings.Contains(err.Error(), "topsecret") {
		t.Errorf("a URL without a key: %v", err)
	}
	if r := redact("http://id:topsecret@rtcd:8045"); strings.Contains(r, "topsecret") {
		t.Errorf("redact kept the key: %s", r)
	}
}

func TestParseCallStateReadsEitherSessionShape(t *testing.T) {
	st, err := ParseCallState([]byte(`{"channel_id":"c","call":{"id":"call1","sessions":[{"session_id":"s1","user_id":"u1"},{"session_id":"s2"}]}}`))
	if err != nil || st.CallID != "call1" || strings.Join(st.Sessions, ",") != "s1,s2" {
		t.Fatalf("list: %+v %v", st, err)
	}
	st, err = ParseCallState([]byte(`{"call":{"id":"call2","sessions":{"s9":{"user_id":"u"}}}}`))
	if err != nil || st.CallID != "call2" || len(st.Sessions) != 1 || st.Sessions[0] != "s9" {
		t.Fatalf("map: %+v %v", st, err)
	}
	for _, bad := range []string{`{}`, `{"call":null}`, `not json`, `{"call":{"id":"x","sessions":7}}`} {
		if _, err := ParseCallState([]byte(bad)); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}

func TestParseSessionsReadsTheSessionsAPI(t *testing.T) {
	ids, err := ParseSessions(200, []byte(`[{"GroupID":"g","CallID":"c","UserID":"u","SessionID":"s1","Props":{}},{"SessionID":"s2"}]`))
	if err != nil || strings.Join(ids, ",") != "s1,s2" {
		t.Fatalf("%v %v", ids, err)
	}
	if ids, err := ParseSessions(404, []byte(`{"error":"group not found"}`)); err != nil || len(ids) != 0 {
		t.Fatalf("404 is an instance without the call: %v %v", ids, err)
	}
	if _, err := ParseSessions(401, nil); err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("401: %v", err)
	}
	if _, err := ParseSessions(500, []byte("boom")); err == nil {
		t.Fatal("500 was accepted")
	}
	if _, err := ParseSessions(200, []byte(`{"not":"a list"}`)); err == nil {
		t.Fatal("a non-list was accepted")
	}
}

func TestPlaceFindsSessionsThatAreOnNoRTCD(t *testing.T) {
	p := Place([]string{"a", "b", "c"}, map[string][]string{"10.0.0.1:8045": {"a"}, "10.0.0.2:8045": {"b", "c", "x"}})
	if !p.All() || p.OnRTCD["a"] != "10.0.0.1:8045" || p.OnRTCD["c"] != "10.0.0.2:8045" {
		t.Fatalf("%+v", p)
	}
	p = Place([]string{"a", "z", "y"}, map[string][]string{"10.0.0.1:8045": {"a"}})
	if p.All() || strings.Join(p.Missing, ",") != "y,z" {
		t.Fatalf("%+v", p)
	}
	if Place(nil, nil).All() {
		t.Fatal("no sessions at all is not a call on rtcd")
	}
}

func TestReportGivesEachLatencyAndTheirMedians(t *testing.T) {
	r := Report([]Timing{
		{"two-party", "join -> media connected", 300 * time.Millisecond},
		{"two-party", "join -> media connected", 500 * time.Millisecond},
		{"six-party", "join -> media connected", 400 * time.Millisecond},
		{"two-party", "unmute -> audio at the other", 120 * time.Millisecond},
	})
	for _, want := range []string{"join -> media connected:", "n=3 median 400 ms, max 500 ms", "n=1 median 120 ms, max 120 ms", "two-party"} {
		if !strings.Contains(r, want) {
			t.Errorf("report lacks %q:\n%s", want, r)
		}
	}
}

func TestVP8FramesCarryTheKeyframeBitTheSFUReads(t *testing.T) {
	k := VP8Frame(true, 1200)
	if len(k) != 1200 || k[0]&1 != 0 || k[3] != 0x9d || k[4] != 0x01 || k[5] != 0x2a {
		t.Fatalf("keyframe header % x", k[:10])
	}
	if w := int(k[6]) | int(k[7])<<8; w != 320 {
		t.Fatalf("width %d", w)
	}
	d := VP8Frame(false, 1200)
	if d[0]&1 != 1 || d[3] == 0x9d {
		t.Fatalf("interframe header % x", d[:10])
	}
	if len(VP8Frame(true, 3)) != 10 {
		t.Fatal("a frame is at least its header")
	}
}

func TestInboundCountsPerTrackAndWaits(t *testing.T) {
	in := NewInbound()
	t0 := time.Now()
	in.Packet("voice_a", "audio", t0)
	in.Packet("voice_a", "audio", t0.Add(time.Second))
	in.Packet("screen_a", "video", t0)
	if in.Packets("audio") != 2 || in.Packets("video") != 1 || len(in.Snapshot("")) != 2 {
		t.Fatalf("%+v", in.Snapshot(""))
	}
	if s := in.Snapshot("audio"); !s[0].First.Equal(t0) {
		t.Fatalf("first arrival %v", s[0].First)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if in.WaitFor(ctx, func([]InTrack) bool { return in.Packets("audio") >= 3 }) {
		t.Fatal("a wait for a third packet that never comes returned true")
	}
	go func() {
		time.Sleep(20 * time.Millisecond)
		in.Packet("voice_a", "audio", time.Now())
	}()
	ctx2, cancel2 := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel2()
	if !in.WaitFor(ctx2, func([]InTrack) bool { return in.Packets("audio") >= 3 }) {
		t.Fatal("the third packet was not seen")
	}
}

// A stand-in Mattermost API (a unit test of the preflight's wiring: the requests it makes and
// the fields it reads; the suite itself needs a real server).
func fakeMattermost(t *testing.T, license, config, statuses string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	mux.HandleFunc("/api/v4/system/ping", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte(`{"status":"OK"}`))
	})
	mux.HandleFunc("/api/v4/users/me", func(w http.ResponseWriter, r *http.Request) {
		if !strings.EqualFold(r.Header.Get("Authorization"), "Bearer admintoken") {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"id":"api.context.session_expired.app_error","status_code":401}`))
			return
		}
		_, _ = w.Write([]byte(`{"id":"u1","username":"sysadmin","roles":"system_user system_admin"}`))
	})
	mux.HandleFunc("/api/v4/license/client", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(license)) })
	mux.HandleFunc("/api/v4/config", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(config)) })
	mux.HandleFunc("/api/v4/plugins/statuses", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte(statuses)) })
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s
}

func TestPreflightReadsLicenceDevModeAndThePluginFromTheAPI(t *testing.T) {
	ctx := context.Background()
	s := fakeMattermost(t, `{"IsLicensed":"false"}`,
		`{"ServiceSettings":{"EnableDeveloper":true,"EnableTesting":false},"PluginSettings":{"Plugins":{"com.mattermost.calls":{"rtcdserviceurl":"http://id:key@rtcd:8045"}}}}`,
		`[{"plugin_id":"com.mattermost.calls","state":2,"version":"1.12.2"}]`)
	if _, _, err := NewAdmin(ctx, s.URL, "wrong"); err == nil {
		t.Fatal("a refused token was accepted")
	}
	a, me, err := NewAdmin(ctx, s.URL, "admintoken")
	if err != nil || me.Username != "sysadmin" {
		t.Fatalf("%v %v", me, err)
	}
	f, err := a.Facts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := ServerFacts{EnableDeveloper: true, PluginState: "running", PluginVersion: "1.12.2", RTCDServiceURL: "http://id:key@rtcd:8045"}
	if f != want {
		t.Fatalf("facts %+v, want %+v", f, want)
	}
	if v := Judge(f, false); !strings.Contains(strings.Join(v.Problems, " "), "embedded SFU") {
		t.Fatalf("developer mode needs EnableTesting too: %+v", v)
	}
}
