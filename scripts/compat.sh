#!/usr/bin/env bash
# Runs the Go compatibility suite (e2e/compat, the real service.Client of mattermost/rtcd with
# pion peers) against the reference rtcd built from its Go module and against our rtcd, each
# inside its own network namespace. Both must pass.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}"
cargo build --locked -p rtcd --bin rtcd
ref="$(e2e/compat/build-ref.sh)"
e2e/compat/run.sh "$ref" rtcd-ref
e2e/compat/run.sh "$target/debug/rtcd" rtcd-rs
