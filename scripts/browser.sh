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
