#!/usr/bin/env bash
# The release build that both images run (Dockerfile.rtcd, Dockerfile.operator) and that
# scripts/image-test.sh runs outside Docker: the commands live in one place.
#   scripts/build-release.sh <rtcd|rtcd-operator> <out-dir>
# Symbols and debug info are dropped (the binary shrinks from ~110 MB to ~14 MB for rtcd).
set -euo pipefail
bin=${1:?usage: build-release.sh <rtcd|rtcd-operator> <out-dir>}
out=${2:?usage: build-release.sh <rtcd|rtcd-operator> <out-dir>}
case "$bin" in
  rtcd) pkg=rtcd ;;
  rtcd-operator) pkg=rtcd-operator ;;
  *) echo "build-release: unknown binary $bin" >&2; exit 2 ;;
esac
export CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=symbols
cargo build --release --locked -p "$pkg" --bin "$bin"
mkdir -p "$out"
install -m 0755 "${CARGO_TARGET_DIR:-target}/release/$bin" "$out/$bin"
