#!/usr/bin/env bash
# Prints the directory holding promtool and prometheus from Debian's pinned prometheus package
# (versions.env), extracting them once into ~/.cache/rtcd-rs/tools/prometheus-<version>/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$HERE/versions.env"
ver=${PROMETHEUS_DEB#*=}
DIR=${RTCD_RS_CACHE:-$HOME/.cache/rtcd-rs}/tools/prometheus-${ver//[^A-Za-z0-9.+-]/_}
if [ ! -x "$DIR/bin/promtool" ] || [ ! -x "$DIR/bin/prometheus" ]; then
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/prometheus-deb.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  (cd "$WORK" && apt-get download -q "$PROMETHEUS_DEB" >&2) \
    || (apt-get update -qq >&2 && cd "$WORK" && apt-get download -q "$PROMETHEUS_DEB" >&2) \
    || { echo "observability: apt-get download $PROMETHEUS_DEB failed: bump it in e2e/observability/versions.env" >&2; exit 1; }
  dpkg-deb -x "$WORK"/prometheus_*.deb "$WORK/x"
  mkdir -p "$DIR/bin"
  cp "$WORK/x/usr/bin/promtool" "$WORK/x/usr/bin/prometheus" "$DIR/bin/"
fi
echo "$DIR/bin"
