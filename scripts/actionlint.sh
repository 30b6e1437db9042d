#!/usr/bin/env bash
# actionlint (pinned, built from its Go module once, cached) over .github/workflows: the release,
# audit and e2e workflows cannot run here, so their syntax, expressions, job graph and the inputs
# of well-known actions are checked statically. Exit 0 with a note if Go or the proxy is missing.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
V=v1.7.12
BIN=$HOME/.cache/rtcd-rs/tools/actionlint-$V/actionlint
if [ ! -x "$BIN" ]; then
  command -v go >/dev/null || { echo "actionlint: SKIP (no Go)"; exit 0; }
  mkdir -p "$(dirname "$BIN")"
  GOBIN=$(dirname "$BIN") GOTOOLCHAIN=local GOFLAGS=-trimpath go install "github.com/rhysd/actionlint/cmd/actionlint@$V" \
    || { echo "actionlint: SKIP (go install github.com/rhysd/actionlint@$V failed: module proxy unreachable?)"; exit 0; }
fi
cd "$ROOT"
"$BIN" -shellcheck= -pyflakes= .github/workflows/*.yaml
echo "actionlint $V: .github/workflows ok"
