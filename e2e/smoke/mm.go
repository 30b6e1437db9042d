// The Mattermost side of the smoke suite, as a system admin through the server's public
// model.Client4: the preflight facts, the suite's own team, channel and users, the plugin's
// view of a call, and removing everything the suite created.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/mattermost/mattermost/server/public/model"
)

// Admin is an API client holding the admin token.
type Admin struct {
	c   *model.Client4
	url string
}

// NewAdmin checks the token: it must belong to a system admin.
func NewAdmin(ctx context.Context, siteURL, token string) (*Admin, *model.User, error) {
	c := model.NewAPIv4Client(strings.TrimRight(siteURL, "/"))
	c.SetToken(token)
	if _, _, err := c.GetPing(ctx); err != nil {
		return nil, nil, fmt.Errorf("GET %s/api/v4/system/ping: %w", siteURL, err)
	}
	me, _, err := c.GetMe(ctx, "")
	if err != nil {
		return nil, nil, fmt.Errorf("the admin token is refused (GET /api/v4/users/me): %w", err)
	}
	if !strings.Contains(" "+me.Roles+" ", " system_admin ") {
		return nil, nil, fmt.Errorf("the token belongs to %s, who is not a system admin (roles %q)", me.Username, me.Roles)
	}
	return &Admin{c: c, url: strings.TrimRight(siteURL, "/")}, me, nil
}

// Facts reads licence, developer mode, the Calls plugin's state and its RTCD setting.
func (a *Admin) Facts(ctx context.Context) (ServerFacts, error) {
	var f ServerFacts
	lic, _, err := a.c.GetOldClientLicense(ctx, "")
	if err != nil {
		return f, fmt.Errorf("GET /api/v4/license/client: %w", err)
	}
	f.Licensed = lic["IsLicensed"] == "true"
	f.SKU = lic["SkuShortName"]
	cfg, _, err := a.c.GetConfig(ctx)
	if err != nil {
		return f, fmt.Errorf("GET /api/v4/config: %w", err)
	}
	f.EnableDeveloper = cfg.ServiceSettings.EnableDeveloper != nil && *cfg.ServiceSettings.EnableDeveloper
	f.EnableTesting = cfg.ServiceSettings.EnableTesting != nil && *cfg.ServiceSettings.EnableTesting
	if p, ok := cfg.PluginSettings.Plugins[CallsPluginID]; ok {
		if u, ok := p["rtcdserviceurl"].(string); ok {
			f.RTCDServiceURL = u
		}
	}
	statuses, _, err := a.c.GetPluginStatuses(ctx)
	if err != nil {
		return f, fmt.Errorf("GET /api/v4/plugins/statuses: %w", err)
	}
	for _, s := range statuses {
		if s.PluginId != CallsPluginID {
			continue
		}
		f.PluginVersion = s.Version
		switch s.State {
		case model.PluginStateRunning:
			f.PluginState = "running"
		case model.PluginStateFailedToStart, model.PluginStateFailedToStayRunning:
			f.PluginState = "failed (" + s.Error + ")"
		default:
			f.PluginState = "not running"
		}
	}
	return f, nil
}

// Fixture is what the suite created, to be removed at the end.
type Fixture struct {
	TeamID    string
	ownTeam   bool
	ChannelID string
	Users     []User
}

// User is one test user and its session token.
type User struct {
	ID, Name, Token string
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Setup creates a team (named rtcd-smoke-<random>), an open channel in it and n users who are
// members of both, and logs each user in.
func (a *Admin) Setup(ctx context.Context, n int, log func(string, ...any)) (*Fixture, error) {
	tag := randomHex(4)
	fx := &Fixture{}
	team, _, err := a.c.CreateTeam(ctx, &model.Team{Name: "rtcd-smoke-" + tag, DisplayName: "rtcd smoke " + tag, Type: model.TeamInvite})
	if err != nil {
		return fx, fmt.Errorf("creating the test team: %w", err)
	}
	fx.TeamID, fx.ownTeam = team.Id, true
	ch, _, err := a.c.CreateChannel(ctx, &model.Channel{TeamId: team.Id, Name: "rtcd-smoke-" + tag, DisplayName: "rtcd smoke " + tag, Type: model.ChannelTypeOpen})
	if err != nil {
		return fx, fmt.Errorf("creating the test channel: %w", err)
	}
	fx.ChannelID = ch.Id
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("rtcd-smoke-%s-%d", tag, i)
		password := "Sm0ke!" + randomHex(12)
		u, _, err := a.c.CreateUser(ctx, &model.User{Username: name, Email: name + "@rtcd-smoke.invalid", Password: password, EmailVerified: true})
		if err != nil {
			return fx, fmt.Errorf("creating test user %s: %w", name, err)
		}
		fx.Users = append(fx.Users, User{ID: u.Id, Name: name})
		if _, _, err := a.c.AddTeamMember(ctx, team.Id, u.Id); err != nil {
			return fx, fmt.Errorf("adding %s to the test team: %w", name, err)
		}
		if _, _, err := a.c.AddChannelMember(ctx, ch.Id, u.Id); err != nil {
			return fx, fmt.Errorf("adding %s to the test channel: %w", name, err)
		}
		uc := model.NewAPIv4Client(a.url)
		if _, _, err := uc.Login(ctx, name, password); err != nil {
			return fx, fmt.Errorf("logging in as %s: %w", name, err)
		}
		fx.Users[len(fx.Users)-1].Token = uc.AuthToken
	}
	log("created team %s, channel %s and %d users (rtcd-smoke-%s-*)", team.Name, ch.Name, n, tag)
	return fx, nil
}

// Cleanup removes what Setup made: users deleted for good where the server allows it
// (ServiceSettings.EnableAPIUserDeletion), else deactivated; the channel and team likewise.
func (a *Admin) Cleanup(ctx context.Context, fx *Fixture, log func(string, ...any)) {
	for _, u := range fx.Users {
		if _, err := a.c.PermanentDeleteUser(ctx, u.ID); err != nil {
			if _, err2 := a.c.DeleteUser(ctx, u.ID); err2 != nil {
				log("cleanup: could not delete or deactivate user %s: %v; %v", u.Name, err, err2)
				continue
			}
			log("cleanup: user %s deactivated (permanent deletion refused: %v)", u.Name, err)
		}
	}
	if fx.ChannelID != "" {
		if _, err := a.c.PermanentDeleteChannel(ctx, fx.ChannelID); err != nil {
			if _, err2 := a.c.DeleteChannel(ctx, fx.ChannelID); err2 != nil {
				log("cleanup: could not delete or archive the test channel: %v; %v", err, err2)
			}
		}
	}
	if fx.ownTeam && fx.TeamID != "" {
		if _, err := a.c.PermanentDeleteTeam(ctx, fx.TeamID); err != nil {
			if _, err2 := a.c.SoftDeleteTeam(ctx, fx.TeamID); err2 != nil {
				log("cleanup: could not delete or archive the test team: %v; %v", err, err2)
			}
		}
	}
}

// CallState is the Calls plugin's view of the call in a channel.
type CallState struct {
	CallID   string
	Sessions []string
}

// Call reads GET /plugins/com.mattermost.calls/calls/{channelID}.
func (a *Admin) Call(ctx context.Context, channelID string) (CallState, error) {
	resp, err := a.c.DoAPIRequest(ctx, http.MethodGet, a.url+"/plugins/"+CallsPluginID+"/calls/"+channelID, "", "")
	if err != nil {
		return CallState{}, fmt.Errorf("GET /plugins/%s/calls/%s: %w", CallsPluginID, channelID, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return CallState{}, fmt.Errorf("reading the call state: %w", err)
	}
	return ParseCallState(body)
}

// ParseCallState reads the plugin's channel state: {"call": {"id", "sessions": [...]}}, where
// sessions are objects with "session_id" (Calls v0.2x–v1.x) or a map keyed by session ID.
func ParseCallState(body []byte) (CallState, error) {
	var raw struct {
		Call *struct {
			ID       string          `json:"id"`
			Sessions json.RawMessage `json:"sessions"`
		} `json:"call"`
	}
	if err := json.Unmarshal(body, &raw); err != nil {
		return CallState{}, fmt.Errorf("the plugin's call state is not JSON: %w", err)
	}
	if raw.Call == nil || raw.Call.ID == "" {
		return CallState{}, fmt.Errorf("the plugin reports no call in the channel")
	}
	st := CallState{CallID: raw.Call.ID}
	var list []struct {
		SessionID string `json:"session_id"`
	}
	if err := json.Unmarshal(raw.Call.Sessions, &list); err == nil {
		for _, s := range list {
			if s.SessionID != "" {
				st.Sessions = append(st.Sessions, s.SessionID)
			}
		}
		return st, nil
	}
	var byID map[string]json.RawMessage
	if err := json.Unmarshal(raw.Call.Sessions, &byID); err != nil {
		return CallState{}, fmt.Errorf("the plugin's call sessions are neither a list nor a map: %w", err)
	}
	for id := range byID {
		st.Sessions = append(st.Sessions, id)
	}
	return st, nil
}
