#!/usr/bin/env bash
# Runs the Go compatibility suite (e2e/compat, the real service.Client of mattermost/rtcd with
# pion peers) against the reference rtcd built from its Go module and against our rtcd, each
# inside its own network namespace. All must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}"
cargo build --locked -p rtcd --bin rtcd --features fault-injection
ref="$(e2e/compat/build-ref.sh)"
e2e/compat/run.sh "$ref" rtcd-ref
# Ours twice: on two engine shards with a session that panics (TestPanicContained; the debug
# build has the fault-injection feature), then on one shard.
COMPAT_FAULT_USER=compatfaultuser000000000000 COMPAT_SERVER_ENV="RTCD_RTC_ENGINESHARDS=2" \
  e2e/compat/run.sh "$target/debug/rtcd" rtcd-rs
COMPAT_SERVER_ENV="RTCD_RTC_ENGINESHARDS=1" e2e/compat/run.sh "$target/debug/rtcd" rtcd-rs-1shard
# Hostile clients against small [limits] (TestHostile: slowloris, floods, guessing bursts,
# invented WS types, session/candidate caps, an ICE-TCP flood), each while a call keeps media.
COMPAT_HOSTILE=1 COMPAT_RUN='^TestHostile$' COMPAT_SERVER_ENV="RTCD_LIMITS_HTTPREADTIMEOUT=2s RTCD_LIMITS_HTTPWRITETIMEOUT=2s \
RTCD_LIMITS_HTTPMAXCONNECTIONSPERIP=30 RTCD_LIMITS_SESSIONSPERCLIENT=4 \
RTCD_LIMITS_CANDIDATESPERSESSION=20 RTCD_LIMITS_ICETCPMAXUNAUTHENTICATEDPERIP=8" \
  e2e/compat/run.sh "$target/debug/rtcd" rtcd-rs-hostile
