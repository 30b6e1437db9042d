#!/usr/bin/env bash
# Builds the compat test binary (go test -c of this module) and prints its
# path on stdout; everything else goes to stderr. The binary is cached as
# $HOME/.cache/rtcd-rs/go-bin/compat-test-<hash of go.mod, go.sum, *.go>;
# when it already exists nothing is built. Used by run.sh here and by
# e2e/browser/run.sh (scenario "mixed", which runs TestMixedPeer).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if ! command -v go >/dev/null 2>&1; then
	export PATH="$PATH:/usr/local/go/bin"
fi

bin_dir="${RTCD_RS_GO_BIN:-$HOME/.cache/rtcd-rs/go-bin}"
mkdir -p "$bin_dir"
src_hash="$(cd "$here" && { ls go.mod go.sum *.go; } | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-12)"
test_bin="$bin_dir/compat-test-$src_hash"
if [[ ! -x "$test_bin" ]]; then
	command -v go >/dev/null 2>&1 || { echo "build-test: go not found" >&2; exit 1; }
	echo "build-test: building test binary $test_bin" >&2
	t0=$(date +%s)
	(cd "$here" && GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" \
		nice -n 10 go test -p 1 -c -o "$test_bin.tmp.$$" .)
	mv -f "$test_bin.tmp.$$" "$test_bin"
	# Drop binaries built from older sources.
	find "$bin_dir" -maxdepth 1 -name 'compat-test-*' ! -name "compat-test-$src_hash" -type f -delete
	echo "build-test: test binary built in $(( $(date +%s) - t0 ))s" >&2
fi
echo "$test_bin"
