#!/usr/bin/env bash
# Regenerates the golden wire vectors in rtcd/tests/data/golden/ from rtcd
# v1.2.6's own encoders (e2e/compat/cmd/golden). Idempotent.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/../../rtcd/tests/data/golden}"

if ! command -v go >/dev/null 2>&1; then
	export PATH="$PATH:/usr/local/go/bin"
fi

mkdir -p "$out"
out="$(cd "$out" && pwd)"
# Only the files this generator owns are replaced.
rm -f "$out"/ws_*.hex "$out"/dc_*.hex "$out"/manifest.json
cd "$here"
GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" nice -n 10 go run -p 1 ./cmd/golden -out "$out"
