// The smoke suite's decisions, kept free of I/O so they are unit-tested: whether the
// Mattermost server can run calls on rtcd at all (licence or developer mode, the Calls plugin,
// its RTCD settings), where rtcd is and with which credentials, whether a call's sessions are
// on rtcd, and the latency report.
package main

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"
)

// CallsPluginID is the Calls plugin's ID.
const CallsPluginID = "com.mattermost.calls"

// ServerFacts is what the preflight reads from the Mattermost server (as a system admin).
type ServerFacts struct {
	// Licensed: GET /api/v4/license/client?format=old says IsLicensed "true".
	Licensed bool
	// SKU: the licence's SkuShortName ("enterprise", "professional", ...), when licensed.
	SKU string
	// EnableDeveloper and EnableTesting: ServiceSettings of GET /api/v4/config.
	EnableDeveloper bool
	EnableTesting   bool
	// PluginState: the Calls plugin's state from GET /api/v4/plugins/statuses ("" when the
	// plugin is not installed; "running" when it is up).
	PluginState string
	// PluginVersion: its version.
	PluginVersion string
	// RTCDServiceURL: the plugin setting "rtcdserviceurl" (PluginSettings.Plugins).
	RTCDServiceURL string
}

// Verdict is the preflight's conclusion: Problems stop the suite (calls would not reach rtcd),
// Notes are printed.
type Verdict struct {
	Problems []string
	Notes    []string
}

// Judge decides whether calls through this server can be on rtcd. Without an Enterprise
// licence or developer mode the Calls plugin ignores its RTCD settings and silently runs
// every call on its embedded SFU (port 8443 of the Mattermost server): that is said plainly.
func Judge(f ServerFacts, rtcdURLGiven bool) Verdict {
	var v Verdict
	switch {
	case f.PluginState == "":
		v.Problems = append(v.Problems, "the Calls plugin ("+CallsPluginID+") is not installed on this server")
	case f.PluginState != "running":
		v.Problems = append(v.Problems, fmt.Sprintf("the Calls plugin is %s, not running", f.PluginState))
	}
	enterprise := f.Licensed && (f.SKU == "" || strings.EqualFold(f.SKU, "enterprise") || strings.EqualFold(f.SKU, "advanced") || strings.EqualFold(f.SKU, "e20"))
	devMode := f.EnableDeveloper && f.EnableTesting
	switch {
	case enterprise:
		v.Notes = append(v.Notes, fmt.Sprintf("licence: %s", orDash(f.SKU)))
	case devMode:
		v.Notes = append(v.Notes, "no Enterprise licence, but the server is in developer mode (ServiceSettings.EnableDeveloper and EnableTesting): RTCD mode is allowed")
	case f.Licensed:
		v.Problems = append(v.Problems, fmt.Sprintf("the licence (%s) is not Enterprise and the server is not in developer mode: the Calls plugin ignores RTCD and runs every call on its embedded SFU (port 8443 of the Mattermost server), and group calls are refused", orDash(f.SKU)))
	default:
		v.Problems = append(v.Problems, "no Enterprise licence and no developer mode (ServiceSettings.EnableDeveloper and EnableTesting): the Calls plugin ignores RTCD and runs every call on its embedded SFU (port 8443 of the Mattermost server), and group calls are refused")
	}
	if f.RTCDServiceURL == "" {
		if rtcdURLGiven {
			v.Notes = append(v.Notes, "the plugin's RTCD Service URL is empty in the server config (it may come from MM_CALLS_RTCD_URL in the server's environment, which the API does not show)")
		} else {
			v.Problems = append(v.Problems, "the Calls plugin has no RTCD Service URL in the server config, and none was given with -rtcd-url (set it if it comes from MM_CALLS_RTCD_URL in the server's environment)")
		}
	}
	return v
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// RTCDTarget is an rtcd API base URL and the credentials for its sessions API.
type RTCDTarget struct {
	// Base: scheme://host:port, no path, no credentials.
	Base     string
	ClientID string
	AuthKey  string
}

// ParseRTCDURL reads the plugin's RTCD Service URL form, "http(s)://clientID:authKey@host:port",
// where the credentials are optional; explicit ones (flags) win over those in the URL.
func ParseRTCDURL(raw, clientID, authKey string) (RTCDTarget, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return RTCDTarget{}, fmt.Errorf("rtcd URL %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return RTCDTarget{}, fmt.Errorf("rtcd URL %q: the scheme must be http or https", raw)
	}
	if u.Host == "" {
		return RTCDTarget{}, fmt.Errorf("rtcd URL %q has no host", raw)
	}
	t := RTCDTarget{Base: u.Scheme + "://" + u.Host}
	if u.User != nil {
		t.ClientID = u.User.Username()
		t.AuthKey, _ = u.User.Password()
	}
	if clientID != "" {
		t.ClientID = clientID
	}
	if authKey != "" {
		t.AuthKey = authKey
	}
	if t.ClientID == "" || t.AuthKey == "" {
		return RTCDTarget{}, fmt.Errorf("rtcd URL %q: no client ID and auth key for its sessions API (put them in the URL as the plugin does, or give -rtcd-client-id and -rtcd-auth-key)", redact(raw))
	}
	return t, nil
}

// redact hides a URL's password.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), "xxxxx")
	}
	return u.String()
}

// Placement compares the sessions the Calls plugin reports for a call with those rtcd
// instances report for it. All returns true when every plugin session is on some rtcd.
type Placement struct {
	OnRTCD  map[string]string // session ID -> the rtcd address it is on
	Missing []string          // plugin sessions no rtcd knows
}

// All: every session of the call is on an rtcd.
func (p Placement) All() bool { return len(p.Missing) == 0 && len(p.OnRTCD) > 0 }

// Place matches the plugin's session IDs against each rtcd address's session IDs.
func Place(pluginSessions []string, rtcdSessions map[string][]string) Placement {
	p := Placement{OnRTCD: map[string]string{}}
	where := map[string]string{}
	addrs := make([]string, 0, len(rtcdSessions))
	for a := range rtcdSessions {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		for _, s := range rtcdSessions[a] {
			if _, seen := where[s]; !seen {
				where[s] = a
			}
		}
	}
	for _, s := range pluginSessions {
		if a, ok := where[s]; ok {
			p.OnRTCD[s] = a
		} else {
			p.Missing = append(p.Missing, s)
		}
	}
	sort.Strings(p.Missing)
	return p
}

// Timing is one measured latency.
type Timing struct {
	Step string
	What string
	D    time.Duration
}

// Report formats the latencies: one line per measurement, then per kind the count, median
// and maximum.
func Report(ts []Timing) string {
	var b strings.Builder
	byWhat := map[string][]time.Duration{}
	var order []string
	for _, t := range ts {
		fmt.Fprintf(&b, "  %-28s %-34s %7.0f ms\n", t.Step, t.What, ms(t.D))
		if _, ok := byWhat[t.What]; !ok {
			order = append(order, t.What)
		}
		byWhat[t.What] = append(byWhat[t.What], t.D)
	}
	for _, w := range order {
		ds := byWhat[w]
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		fmt.Fprintf(&b, "  %-34s n=%d median %.0f ms, max %.0f ms\n", w+":", len(ds), ms(ds[len(ds)/2]), ms(ds[len(ds)-1]))
	}
	return b.String()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
