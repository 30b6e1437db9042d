// Command rtcd-smoke is the check an admin runs after deploying rtcd behind Mattermost Calls:
// through the Mattermost server it creates its own users and channel, runs a two-party call
// both ways, mute/unmute, a screen share and a six-party call with rtcd's own Go client, checks
// that every session landed on an rtcd instance (its sessions API) and not on the Calls
// plugin's embedded SFU, reports connect and first-media latencies, and deletes what it made.
//
//	rtcd-smoke -mm-url https://chat.example.com -mm-admin-token <token> [-rtcd-url URL]
//
// Environment: MM_URL, MM_ADMIN_TOKEN, RTCD_URL, RTCD_CLIENT_ID, RTCD_AUTH_KEY stand in for
// the flags. Exit status: 0 all passed, 1 a check failed, 2 the server cannot run calls on rtcd
// (no Enterprise licence nor developer mode, no Calls plugin, no RTCD URL) or bad arguments.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"
)

func env(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

type suite struct {
	site    string
	admin   *Admin
	fx      *Fixture
	rtcd    RTCDTarget
	timeout time.Duration
	timings []Timing
	failed  []string
}

func (s *suite) logf(format string, a ...any) {
	fmt.Printf("%s "+format+"\n", append([]any{time.Now().Format("15:04:05.000")}, a...)...)
}

func (s *suite) pass(step, detail string) { fmt.Printf("PASS %s: %s\n", step, detail) }

func (s *suite) fail(step string, err error) {
	fmt.Printf("FAIL %s: %v\n", step, err)
	s.failed = append(s.failed, step)
}

func (s *suite) time(step, what string, d time.Duration) {
	s.timings = append(s.timings, Timing{Step: step, What: what, D: d})
}

func main() {
	site := flag.String("mm-url", env("MM_URL", ""), "Mattermost site URL (MM_URL)")
	token := flag.String("mm-admin-token", env("MM_ADMIN_TOKEN", ""), "a system admin's token (MM_ADMIN_TOKEN)")
	rtcdURL := flag.String("rtcd-url", env("RTCD_URL", ""), "rtcd's API URL (RTCD_URL; default: the Calls plugin's RTCD Service URL)")
	clientID := flag.String("rtcd-client-id", env("RTCD_CLIENT_ID", ""), "the plugin's rtcd client ID, when not in the URL (RTCD_CLIENT_ID)")
	authKey := flag.String("rtcd-auth-key", env("RTCD_AUTH_KEY", ""), "the plugin's rtcd auth key, when not in the URL (RTCD_AUTH_KEY)")
	timeout := flag.Duration("timeout", 20*time.Second, "how long each wait may take")
	keep := flag.Bool("keep", false, "leave the test users, channel and team in place")
	flag.Parse()
	if *site == "" || *token == "" {
		fmt.Fprintln(os.Stderr, "rtcd-smoke: give the Mattermost URL and an admin token (-mm-url/MM_URL, -mm-admin-token/MM_ADMIN_TOKEN)")
		os.Exit(2)
	}
	os.Exit(run(*site, *token, *rtcdURL, *clientID, *authKey, *timeout, *keep))
}

func run(site, token, rtcdURL, clientID, authKey string, timeout time.Duration, keep bool) int {
	ctx := context.Background()
	s := &suite{site: strings.TrimRight(site, "/"), timeout: timeout}
	admin, me, err := NewAdmin(ctx, s.site, token)
	if err != nil {
		fmt.Println("rtcd-smoke:", err)
		return 2
	}
	s.admin = admin
	facts, err := admin.Facts(ctx)
	if err != nil {
		fmt.Println("rtcd-smoke:", err)
		return 2
	}
	s.logf("server %s as %s; Calls plugin %s %s; licensed %v (%s); developer mode %v/%v; RTCD Service URL %s",
		s.site, me.Username, orDash(facts.PluginVersion), orDash(facts.PluginState), facts.Licensed, orDash(facts.SKU),
		facts.EnableDeveloper, facts.EnableTesting, orDash(redact(facts.RTCDServiceURL)))
	verdict := Judge(facts, rtcdURL != "")
	for _, n := range verdict.Notes {
		s.logf("note: %s", n)
	}
	if len(verdict.Problems) > 0 {
		for _, p := range verdict.Problems {
			fmt.Println("FAIL preflight:", p)
		}
		return 2
	}
	if rtcdURL == "" {
		rtcdURL = facts.RTCDServiceURL
	}
	s.rtcd, err = ParseRTCDURL(rtcdURL, clientID, authKey)
	if err != nil {
		fmt.Println("FAIL preflight:", err)
		return 2
	}
	s.pass("preflight", "the Calls plugin runs and may use rtcd at "+s.rtcd.Base)

	s.fx, err = admin.Setup(ctx, 6, s.logf)
	if !keep {
		defer func() {
			admin.Cleanup(context.Background(), s.fx, s.logf)
			s.logf("removed the test users, channel and team")
		}()
	}
	if err != nil {
		s.fail("setup", err)
		return 1
	}
	s.twoParty(ctx)
	s.sixParty(ctx)

	fmt.Println("latencies:")
	fmt.Print(Report(s.timings))
	if len(s.failed) > 0 {
		fmt.Printf("rtcd-smoke: %d check(s) failed: %s\n", len(s.failed), strings.Join(s.failed, ", "))
		return 1
	}
	fmt.Println("rtcd-smoke: every check passed")
	return 0
}

// join connects users (in order), timing each.
func (s *suite) join(ctx context.Context, step string, users []User) ([]*Participant, error) {
	var ps []*Participant
	for _, u := range users {
		p, d, err := Join(ctx, s.site, u, s.fx.ChannelID, s.timeout)
		if err != nil {
			leaveAll(ps)
			return nil, err
		}
		s.time(step, "join -> media connected", d)
		ps = append(ps, p)
	}
	return ps, nil
}

func leaveAll(ps []*Participant) {
	for _, p := range ps {
		_ = p.Leave()
	}
}

// hears waits until p receives growing audio on `tracks` distinct remote voice tracks.
func (s *suite) hears(ctx context.Context, p *Participant, tracks int) bool {
	wctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	return p.In.WaitFor(wctx, func(ts []InTrack) bool {
		n := 0
		for _, t := range ts {
			if t.Kind == "audio" && t.Packets >= 5 {
				n++
			}
		}
		return n >= tracks
	})
}

// onRTCD checks that the call's sessions, as the plugin reports them, are all on rtcd.
func (s *suite) onRTCD(ctx context.Context, step string, want int) {
	st, err := s.admin.Call(ctx, s.fx.ChannelID)
	if err != nil {
		s.fail(step, err)
		return
	}
	addrs, err := Instances(ctx, s.rtcd)
	if err != nil {
		s.fail(step, err)
		return
	}
	got := map[string][]string{}
	for _, a := range addrs {
		ids, err := SessionsAt(ctx, s.rtcd, a, st.CallID)
		if err != nil {
			s.fail(step, err)
			return
		}
		got[a] = ids
	}
	pl := Place(st.Sessions, got)
	switch {
	case len(st.Sessions) < want:
		s.fail(step, fmt.Errorf("the plugin reports %d sessions in call %s, want %d", len(st.Sessions), st.CallID, want))
	case !pl.All():
		s.fail(step, fmt.Errorf("sessions %v of call %s are on no rtcd instance (%s): the Calls plugin is running them elsewhere, most likely on its embedded SFU", pl.Missing, st.CallID, strings.Join(addrs, ", ")))
	default:
		where := map[string]int{}
		for _, a := range pl.OnRTCD {
			where[a]++
		}
		s.pass(step, fmt.Sprintf("all %d sessions of call %s are on rtcd (%v)", len(st.Sessions), st.CallID, where))
	}
}

func (s *suite) twoParty(ctx context.Context) {
	const step = "two-party"
	ps, err := s.join(ctx, step, s.fx.Users[:2])
	if err != nil {
		s.fail(step, err)
		return
	}
	defer leaveAll(ps)
	a, b := ps[0], ps[1]
	for _, pair := range [][2]*Participant{{a, b}, {b, a}} {
		spk, lis := pair[0], pair[1]
		t0 := time.Now()
		if err := spk.Unmute(); err != nil {
			s.fail(step, err)
			return
		}
		if !s.hears(ctx, lis, 1) {
			s.fail(step, fmt.Errorf("%s does not hear %s within %s (%s)", lis.Name, spk.Name, s.timeout, lis.Errors()))
			return
		}
		s.time(step, "unmute -> audio at the other", firstAudio(lis).Sub(t0))
		if err := spk.Mute(); err != nil {
			s.fail(step, err)
			return
		}
	}
	s.pass(step, "each of two users hears the other")
	s.onRTCD(ctx, "two-party on rtcd", 2)

	// Mute stops the voice at the listener, unmute brings it back.
	const mstep = "mute/unmute"
	if err := a.Unmute(); err != nil {
		s.fail(mstep, err)
		return
	}
	time.Sleep(time.Second)
	if err := a.Mute(); err != nil {
		s.fail(mstep, err)
		return
	}
	time.Sleep(500 * time.Millisecond)
	n0 := b.In.Packets("audio")
	time.Sleep(time.Second)
	if d := b.In.Packets("audio") - n0; d > 5 {
		s.fail(mstep, fmt.Errorf("%s still got %d audio packets in the second after %s muted", b.Name, d, a.Name))
		return
	}
	n1 := b.In.Packets("audio")
	t0 := time.Now()
	if err := a.Unmute(); err != nil {
		s.fail(mstep, err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, s.timeout)
	back := b.In.WaitFor(wctx, func([]InTrack) bool { return b.In.Packets("audio") >= n1+5 })
	cancel()
	if !back {
		s.fail(mstep, fmt.Errorf("%s's audio did not come back to %s within %s of unmuting", a.Name, b.Name, s.timeout))
		return
	}
	s.time(mstep, "unmute -> audio again", time.Since(t0))
	s.pass(mstep, "muting stops the voice at the listener and unmuting brings it back")

	// Screen share.
	const sstep = "screen share"
	t0 = time.Now()
	stopShare, err := a.ShareScreen()
	if err != nil {
		s.fail(sstep, err)
		return
	}
	wctx, cancel = context.WithTimeout(ctx, s.timeout)
	got := b.In.WaitFor(wctx, func(ts []InTrack) bool {
		for _, t := range ts {
			if t.Kind == "video" && t.Packets >= 10 {
				return true
			}
		}
		return false
	})
	cancel()
	if !got {
		s.fail(sstep, fmt.Errorf("%s got no screen share from %s within %s", b.Name, a.Name, s.timeout))
		return
	}
	for _, t := range b.In.Snapshot("video") {
		s.time(sstep, "screen on -> first screen packet", t.First.Sub(t0))
		break
	}
	if err := stopShare(); err != nil {
		s.fail(sstep, err)
		return
	}
	s.pass(sstep, fmt.Sprintf("%s sees %s's screen", b.Name, a.Name))
}

func firstAudio(p *Participant) time.Time {
	var first time.Time
	for _, t := range p.In.Snapshot("audio") {
		if first.IsZero() || t.First.Before(first) {
			first = t.First
		}
	}
	return first
}

func (s *suite) sixParty(ctx context.Context) {
	const step = "six-party"
	// The two-party call has ended; wait until the plugin has closed it.
	time.Sleep(2 * time.Second)
	t0 := time.Now()
	ps, err := s.join(ctx, step, s.fx.Users[:6])
	if err != nil {
		s.fail(step, err)
		return
	}
	defer leaveAll(ps)
	s.time(step, "six joined -> all connected", time.Since(t0))
	for _, p := range ps {
		if err := p.Unmute(); err != nil {
			s.fail(step, err)
			return
		}
	}
	for _, p := range ps {
		if !s.hears(ctx, p, len(ps)-1) {
			s.fail(step, fmt.Errorf("%s hears %d of the other %d within %s", p.Name, len(p.In.Snapshot("audio")), len(ps)-1, s.timeout))
			return
		}
	}
	s.pass(step, "each of six users hears the other five")
	s.onRTCD(ctx, "six-party on rtcd", 6)
}
