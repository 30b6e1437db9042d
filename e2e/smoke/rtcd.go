// The rtcd side of the smoke suite: the sessions API of every instance behind the RTCD service
// URL's name (the Calls plugin spreads calls over the addresses it resolves), read with the
// plugin's own credentials.
package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"time"
)

// Instances resolves the target's host to the addresses the plugin would pick from.
func Instances(ctx context.Context, t RTCDTarget) ([]string, error) {
	u, err := url.Parse(t.Base)
	if err != nil {
		return nil, err
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	if ip := net.ParseIP(host); ip != nil {
		return []string{net.JoinHostPort(host, port)}, nil
	}
	ips, err := net.DefaultResolver.LookupHost(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolving the rtcd host %s: %w", host, err)
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip, port))
	}
	return out, nil
}

// SessionsAt lists the session IDs of a call on the rtcd instance at addr (GET
// /calls/{callID}/sessions, Basic auth as the plugin). A 404 means the instance has no such
// call: an empty list.
func SessionsAt(ctx context.Context, t RTCDTarget, addr, callID string) ([]string, error) {
	u, err := url.Parse(t.Base)
	if err != nil {
		return nil, err
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	client := &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			// The instance's own address, with the service's name for TLS.
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				return dialer.DialContext(ctx, network, addr)
			},
			TLSClientConfig: &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12},
		},
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, t.Base+"/calls/"+url.PathEscape(callID)+"/sessions", nil)
	if err != nil {
		return nil, err
	}
	req.SetBasicAuth(t.ClientID, t.AuthKey)
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rtcd at %s: %w", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fmt.Errorf("rtcd at %s: reading the sessions: %w", addr, err)
	}
	return ParseSessions(resp.StatusCode, body)
}

// ParseSessions reads a sessions API answer: 200 with [{"SessionID": ...}], or 404 (no such
// call or group here) as none.
func ParseSessions(status int, body []byte) ([]string, error) {
	switch status {
	case http.StatusOK:
	case http.StatusNotFound:
		return nil, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return nil, fmt.Errorf("the sessions API refused the credentials (%d): are the client ID and auth key the plugin's?", status)
	default:
		return nil, fmt.Errorf("the sessions API answered %d: %.200s", status, body)
	}
	var list []struct {
		SessionID string `json:"SessionID"`
	}
	if err := json.Unmarshal(body, &list); err != nil {
		return nil, fmt.Errorf("the sessions API answer is not a session list: %w", err)
	}
	ids := make([]string, 0, len(list))
	for _, s := range list {
		ids = append(ids, s.SessionID)
	}
	return ids, nil
}
