// Package compat is the Go side of the rtcd-rs wire-compatibility proof.
//
// The tests in this package act like the Mattermost Calls plugin (through
// rtcd's own service.Client) plus two Calls webapp peers (pion/webrtc v4),
// and run unchanged against the reference Mattermost rtcd and against
// rtcd-rs. They are configured through the environment:
//
//	RTCD_URL        base URL of the server under test, e.g. http://127.0.0.1:8045
//	RTCD_ADMIN_KEY  the server's admin secret (api.security.admin_secret_key)
//	COMPAT_SKIP     optional comma-separated list of checks to skip: vad, dc
//
// Without RTCD_URL every test is skipped. Use run.sh to start a server in a
// private network namespace and run the compiled tests against it.
package compat
