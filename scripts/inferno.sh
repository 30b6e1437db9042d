#!/usr/bin/env bash
# Installs inferno (flame graph SVGs from folded stacks) once, cached under
# ~/.cache/rtcd-rs/tools/inferno-<version>, and prints its bin directory. Only `make bench
# FLAMEGRAPH=…` needs it; when the install fails the benchmark still writes the perf report.
set -euo pipefail
VERSION=0.12.3
DIR=$HOME/.cache/rtcd-rs/tools/inferno-$VERSION
if [ ! -x "$DIR/bin/inferno-flamegraph" ]; then
  cargo install -q --locked --version "$VERSION" --root "$DIR" inferno >&2 \
    || echo "inferno.sh: cargo install inferno $VERSION failed; no SVG will be drawn" >&2
fi
echo "$DIR/bin"
