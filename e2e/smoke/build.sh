#!/usr/bin/env bash
# Builds rtcd-smoke (this module) and prints the binary's path on stdout; everything else goes
# to stderr. Cached as $HOME/.cache/rtcd-rs/go-bin/rtcd-smoke-<hash of go.mod, go.sum, *.go>:
# when it exists nothing is built. Needs only the Go module proxy.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v go >/dev/null 2>&1; then
	export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || { echo "smoke build: go not found" >&2; exit 1; }
bin_dir="${RTCD_RS_GO_BIN:-$HOME/.cache/rtcd-rs/go-bin}"
mkdir -p "$bin_dir"
src_hash="$(cd "$here" && { ls go.mod go.sum *.go; } | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)"
bin="$bin_dir/rtcd-smoke-$src_hash"
if [[ ! -x "$bin" ]]; then
	echo "smoke build: building $bin" >&2
	t0=$(date +%s)
	(cd "$here" && GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" nice -n 10 go build -o "$bin.tmp.$$" .)
	mv -f "$bin.tmp.$$" "$bin"
	find "$bin_dir" -maxdepth 1 -name 'rtcd-smoke-*' ! -name "rtcd-smoke-$src_hash" -type f -delete
	echo "smoke build: built in $(( $(date +%s) - t0 ))s" >&2
fi
echo "$bin"
