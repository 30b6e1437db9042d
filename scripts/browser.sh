#!/usr/bin/env bash
# Headless Chromium pages running the Calls webapp's own RTCPeer (@mattermost/calls-common)
# join one call through a relay that plays the plugin, against the reference rtcd and ours,
# each scenario inside its own network namespace (e2e/browser).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}"
cargo build --locked -p rtcd --bin rtcd --features fault-injection
ref="$(e2e/compat/build-ref.sh)"
# audio, ice-tcp (UDP dropped by nftables), turn (coturn, relay-only), mixed (pion + Chromium),
# camera (VP8), camera-av1 (AV1 between av1Support pages, VP8 to the third), screen (simulcast
# h/l to a Chromium viewer whose downlink is limited with tbf, then lifted: down to l with no
# decode gap over 1.5 s, back to h), loss (5 % on the viewer's veth: NACK/RTX keeps it decoding),
# werift (a scripted viewer checks that layer switches keep one SSRC with continuous
# seq/ts/PictureID; log-only on the reference).
scenarios=(audio ice-tcp turn mixed camera camera-av1 screen loss werift)
e2e/browser/run-scenarios.sh "$ref" rtcd-ref "${scenarios[@]}"
e2e/browser/run-scenarios.sh "$target/debug/rtcd" rtcd-rs "${scenarios[@]}"
# Ours again on one engine shard (the runs above use one per core: 2 here), over UDP, ICE-TCP
# and with video.
E2E_SERVER_ENV="RTCD_RTC_ENGINESHARDS=1" e2e/browser/run-scenarios.sh "$target/debug/rtcd" rtcd-rs-1shard audio ice-tcp camera
# First media (firstframe): the reference and our release build (what users run; the debug
# build above is slower at signaling), both logging at INFO, then compared: our median time from
# a publisher's first packet or frame to the viewer's first audio packet or decoded frame must be
# no later than rtcd's (e2e/browser/firstframe-compare.mjs). Figures from one run can be moved by
# load from elsewhere on the machine during it: a failed comparison is run again once, and the
# second pair of runs decides.
cargo build --release --locked -p rtcd --bin rtcd
ff="$(mktemp -d "${TMPDIR:-/tmp}/rtcd-firstframe.XXXXXX")"
ff_rc=1
for attempt in 1 2; do
	# The reference may miss a round (rtcd sometimes sends no decodable screen frame within
	# the limit): its figures still count, as "never", and its run's own verdict is not a test.
	E2E_SERVER_LOG_LEVEL=INFO e2e/browser/run.sh "$ref" rtcd-ref firstframe >"$ff/ref.log" 2>&1 || true
	sed -E 's/^(PASS|FAIL) \[/reference run, not counted: \1 [/' "$ff/ref.log"
	ok=1
	E2E_SERVER_LOG_LEVEL=INFO e2e/browser/run.sh "$target/release/rtcd" rtcd-rs firstframe >"$ff/ours.log" 2>&1 || ok=0
	node e2e/browser/firstframe-compare.mjs "$ff/ref.log" "$ff/ours.log" >"$ff/compare.log" 2>&1 || ok=0
	if [[ $ok -eq 1 || $attempt -eq 2 ]]; then
		cat "$ff/ours.log" "$ff/compare.log"
	else
		# Shown, but not counted: the second attempt decides.
		sed -E 's/^FAIL \[/failed, run again: [/' "$ff/ours.log" "$ff/compare.log"
	fi
	if [[ $ok -eq 1 ]]; then
		ff_rc=0
		break
	fi
	echo "browser: firstframe comparison failed on attempt $attempt" >&2
done
rm -rf "$ff"
exit "$ff_rc"
