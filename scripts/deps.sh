#!/usr/bin/env bash
# Installs what `make build` / `make test` need, idempotently: a no-op when all is present.
set -euo pipefail

need_apt=()
[ -x /bin/kill ] || [ -x /usr/bin/kill ] || need_apt+=(procps)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v git >/dev/null 2>&1 || need_apt+=(git)

if [ ${#need_apt[@]} -gt 0 ]; then
  echo "deps: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "deps: cargo not found; install Rust $(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml) (rustup) first" >&2
  exit 1
fi
# rust-toolchain.toml pins the toolchain; make sure it and its components are installed.
cargo --version >/dev/null
cargo fmt --version >/dev/null 2>&1 || { echo "deps: rustfmt missing for the pinned toolchain" >&2; exit 1; }
cargo clippy --version >/dev/null 2>&1 || { echo "deps: clippy missing for the pinned toolchain" >&2; exit 1; }
mkdir -p "${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}"

# The compatibility suite: Go (preinstalled on the project's machines), iproute2, unshare.
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
  export PATH="$PATH:/usr/local/go/bin"
fi
command -v go >/dev/null 2>&1 || { echo "deps: Go (>= 1.24) is required for e2e/compat" >&2; exit 1; }
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
# The canary test blocks UDP in its own namespace with nftables.
command -v nft >/dev/null 2>&1 || missing+=(nftables)
# The operator's control plane (e2e/envtest): PKI with openssl, free ports with python3; its
# binaries are built from Go modules by e2e/envtest/build.sh (cached under ~/.cache/rtcd-rs).
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
