#!/usr/bin/env bash
# Builds the reference Mattermost rtcd (github.com/mattermost/rtcd v1.2.6,
# cmd/rtcd) from the wrapper module in e2e/compat/rtcd-ref and prints the
# path of the binary on stdout. Everything else goes to stderr.
#
# The binary is cached as $HOME/.cache/rtcd-rs/go-bin/rtcd-ref-<hash of go.sum>;
# when it already exists nothing is built. Only the Go module proxy is needed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mod="$here/rtcd-ref"

if ! command -v go >/dev/null 2>&1; then
	export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || { echo "build-ref: go not found" >&2; exit 1; }

bin_dir="${RTCD_RS_GO_BIN:-$HOME/.cache/rtcd-rs/go-bin}"
hash="$(sha256sum "$mod/go.sum" | cut -c1-12)"
out="$bin_dir/rtcd-ref-$hash"

if [[ -x "$out" ]]; then
	echo "build-ref: cached $out" >&2
	echo "$out"
	exit 0
fi

mkdir -p "$bin_dir"

# Same -X variables as rtcd's Makefile (GO_LDFLAGS), fixed so that /version
# reports the tag like an official build does.
pkg=github.com/mattermost/rtcd/service
ldflags="-X '$pkg.buildHash=b3dee59' -X '$pkg.buildVersion=v1.2.6' -X '$pkg.buildDate=2026-06-29 19:15'"

tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
start=$(date +%s)
echo "build-ref: building github.com/mattermost/rtcd/cmd/rtcd -> $out" >&2
(
	cd "$mod"
	GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" \
		nice -n 10 go build -p 1 -trimpath -ldflags "$ldflags" -o "$tmp" github.com/mattermost/rtcd/cmd/rtcd
)
mv -f "$tmp" "$out"
trap - EXIT
echo "build-ref: built in $(( $(date +%s) - start ))s" >&2
echo "$out"
