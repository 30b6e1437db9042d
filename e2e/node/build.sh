#!/usr/bin/env bash
# Build (or find in the cache) the real node's binaries: kubelet and kube-proxy (from the same
# k8s.io/kubernetes module as the control plane, ../envtest/k8s), crictl (cri-tools) and CoreDNS
# (only the plugins cluster DNS needs, coredns/main.go). Prints the binary directory last.
#   NODE_BIN=$(e2e/node/build.sh | tail -n1)
# Exit 3 = SKIP (no Go or no module proxy). Cache: $HOME/.cache/rtcd-rs/node/<key>/bin.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
# shellcheck disable=SC1091
. ../envtest/versions.env
# shellcheck disable=SC1091
. ./versions.env
RECIPE=1
BINARIES="kubelet kube-proxy crictl coredns"
CACHE=${NODE_CACHE:-$HOME/.cache/rtcd-rs/node}
log() { echo "node-build: $*" >&2; }
skip() { log "SKIP ($*)"; exit 3; }
command -v go >/dev/null || skip "no go toolchain"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
KEY=$( { echo "recipe=$RECIPE"; cat versions.env ../envtest/versions.env ../envtest/k8s/go.mod ../envtest/k8s/go.sum \
         crictl/go.mod crictl/go.sum coredns/go.mod coredns/go.sum coredns/main.go; } | sha256sum | cut -c1-16)-$(go env GOVERSION)
BIN=$CACHE/$KEY/bin
have_all() { local b; for b in $BINARIES; do [ -x "$BIN/$b" ] || return 1; done; }
if ! have_all; then
  mkdir -p "$CACHE/$KEY"
  exec 9>"$CACHE/$KEY/lock"
  flock -w 3600 9 || { log "timed out waiting for another build.sh"; exit 1; }
fi
if ! have_all; then
  T0=$(date +%s)
  rm -rf "$BIN.tmp"; mkdir -p "$BIN.tmp"
  for d in ../envtest/k8s crictl coredns; do
    (cd "$d" && go mod download) || skip "go mod download failed in $d (module proxy unreachable?)"
  done
  MINOR=${K8S_VERSION#1.}; MINOR=${MINOR%%.*}
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF="$LDF -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR"
    LDF="$LDF -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd ../envtest/k8s && go build -ldflags "$LDF" -o "$BIN.tmp/" k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)
  log "kubelet, kube-proxy built at $(( $(date +%s) - T0 ))s"
  (cd crictl && go build -ldflags "-s -w -X sigs.k8s.io/cri-tools/pkg/version.Version=v$CRICTL_VERSION" \
      -o "$BIN.tmp/crictl" sigs.k8s.io/cri-tools/cmd/crictl)
  (cd coredns && go build -ldflags "-s -w" -o "$BIN.tmp/coredns" .)
  log "crictl, coredns built at $(( $(date +%s) - T0 ))s"
  "$BIN.tmp/kubelet" --version | grep -qx "Kubernetes v$K8S_VERSION" || { log "kubelet --version is not v$K8S_VERSION"; exit 1; }
  mv -T "$BIN.tmp" "$BIN"
fi
echo "$BIN"
