#!/usr/bin/env bash
# `cargo deny check licenses bans sources` with deny.toml, installing cargo-deny once under
# $HOME/.cache/rtcd-rs/tools/ (keyed by version). Advisories need the RustSec database, a
# fetch this project's CI cannot make: .github/workflows/audit.yaml runs them for users.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo_deny_version=0.20.2
tools="$HOME/.cache/rtcd-rs/tools/cargo-deny-$cargo_deny_version"
if [[ ! -x "$tools/bin/cargo-deny" ]]; then
	cargo install --locked cargo-deny --version "$cargo_deny_version" --root "$tools"
fi
exec "$tools/bin/cargo-deny" --locked check licenses bans sources
