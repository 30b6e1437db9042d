#!/usr/bin/env bash
# Container images without Docker or a registry, as OCI image-layout tars for `ctr images import`:
#   scripts/build-images.sh OUT_DIR        -> OUT_DIR/<image>.tar, OUT_DIR/images.env (NAME=reference)
#
#   rtcd, rtcd-operator  the release build of scripts/build-release.sh (the Dockerfiles' own build
#                        command) on a base layer rebuilt from the Debian packages distroless/cc-debian12
#                        consists of (e2e/node/versions.env BASE_DEBS, pinned), with the passwd/group of
#                        distroless (root, nobody, nonroot 65532). ENTRYPOINT, USER, WORKDIR, ENV,
#                        EXPOSE and LABEL are read from Dockerfile.rtcd / Dockerfile.operator.
#   busybox              Debian's static busybox with its applets: the chart's sysctl init container and
#                        `helm test` pod run it.
#   pause                the same busybox, sleeping: containerd's sandbox image.
#   kubectl              the pinned kubectl (e2e/envtest/versions.env): the chart's cleanup hook.
#   coredns              e2e/node/build.sh's CoreDNS: cluster DNS for the real node.
# Debian packages are cached in $HOME/.cache/rtcd-rs/debs. Needs root (apt-get download, ownership).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${1:?usage: build-images.sh OUT_DIR}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}
# shellcheck disable=SC1091
. "$ROOT/e2e/node/versions.env"
# shellcheck disable=SC1091
. "$ROOT/e2e/envtest/versions.env"
log() { echo "build-images: $*" >&2; }
APP_VERSION=$(awk -F'"' '/^appVersion:/{print $2}' "$ROOT/charts/mattermost-rtcd/Chart.yaml")
REPO=localhost/rtcd-rs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/rtcd-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- Debian packages (pinned), cached -------------------------------------------------------------------
DEBS=$HOME/.cache/rtcd-rs/debs
mkdir -p "$DEBS"
deb_file() { # pkg=version -> path of its .deb, downloaded once
  local pkg=${1%%=*} ver=${1#*=} f
  f=$(find "$DEBS" -maxdepth 1 -name "${pkg}_${ver//:/%3a}_*.deb" | head -n1)
  if [ -z "$f" ]; then
    (cd "$DEBS" && apt-get download -q "$1" >&2) \
      || { (apt-get update -qq >&2 && cd "$DEBS" && apt-get download -q "$1" >&2) \
      || { log "apt-get download $1 failed: Debian no longer serves this version? bump it in e2e/node/versions.env"; exit 1; }; }
    f=$(find "$DEBS" -maxdepth 1 -name "${pkg}_${ver//:/%3a}_*.deb" | head -n1)
  fi
  [ -n "$f" ] || { log "no .deb for $1 in $DEBS"; exit 1; }
  echo "$f"
}

# --- the distroless/cc equivalent --------------------------------------------------------------------------
BASE=$WORK/base
mkdir -p "$BASE"
for p in $BASE_DEBS; do dpkg-deb -x "$(deb_file "$p")" "$BASE"; done
rm -rf "$BASE/usr/share/man" "$BASE/usr/share/info" "$BASE/usr/share/lintian" "$BASE/usr/sbin" "$BASE/usr/bin" \
  "$BASE/etc/init.d" "$BASE/etc/profile.d" "$BASE/etc/update-motd.d"
# update-ca-certificates' result: one bundle of every certificate the package ships.
mkdir -p "$BASE/etc/ssl/certs"
find "$BASE/usr/share/ca-certificates" -name '*.crt' | sort | xargs cat >"$BASE/etc/ssl/certs/ca-certificates.crt"
printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' 'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
  'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' >"$BASE/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'tty:x:5:' 'staff:x:50:' 'nonroot:x:65532:' >"$BASE/etc/group"
mkdir -p "$BASE/tmp" "$BASE/home/nonroot" "$BASE/root" && chmod 1777 "$BASE/tmp" && chmod 0700 "$BASE/home/nonroot" "$BASE/root"
ln -sf /usr/share/zoneinfo/Etc/UTC "$BASE/etc/localtime"
echo "Etc/UTC" >"$BASE/etc/timezone"

image() { # name tar-basename args... -> records NAME=reference in images.env
  local var=$1 ref=$2; shift 2
  local digest; digest=$(python3 "$ROOT/scripts/oci-image.py" --name "$ref" --out "$OUT/$var.tar" "$@")
  echo "${var//-/_}=$ref" >>"$OUT/images.env.tmp"
  echo "${var//-/_}_DIGEST=$digest" >>"$OUT/images.env.tmp"
  log "$ref  $digest  $(( $(stat -c %s "$OUT/$var.tar") / 1024 / 1024 )) MiB"
}
: >"$OUT/images.env.tmp"

# --- rtcd and rtcd-operator, as their Dockerfiles describe them ----------------------------------------
BINS=$HOME/.cache/rtcd-rs/image-test
(cd "$ROOT" && scripts/build-release.sh rtcd "$BINS" >&2 && scripts/build-release.sh rtcd-operator "$BINS" >&2)
df_field() { python3 "$ROOT/scripts/oci-image.py" --dockerfile "$1" --field "$2"; }
for b in rtcd rtcd-operator; do
  df=$ROOT/Dockerfile.rtcd; [ "$b" = rtcd ] || df=$ROOT/Dockerfile.operator
  entry=$(df_field "$df" Entrypoint); workdir=$(df_field "$df" WorkingDir)
  app=$WORK/app-$b
  mkdir -p "$app$(dirname "$entry")"
  install -m 0755 "$BINS/$b" "$app$entry"
  [ -z "$workdir" ] || mkdir -p "$app$workdir"
  image "$b" "$REPO/$b:$APP_VERSION" --layer "$BASE" --layer "$app" --owner home/nonroot=65532:65532 --dockerfile "$df"
done

# --- busybox, pause ---------------------------------------------------------------------------------------
BB=$WORK/busybox
mkdir -p "$BB/bin" "$BB/tmp" "$BB/etc"
dpkg-deb -x "$(deb_file "$BUSYBOX_DEB")" "$WORK/bb-deb"
install -m 0755 "$WORK/bb-deb/bin/busybox" "$BB/bin/busybox"
for a in $("$BB/bin/busybox" --list); do [ "$a" = busybox ] || ln -sf busybox "$BB/bin/$a"; done
chmod 1777 "$BB/tmp"
printf '%s\n' 'root:x:0:0:root:/root:/bin/sh' 'nobody:x:65534:65534:nobody:/nonexistent:/bin/false' >"$BB/etc/passwd"
printf '%s\n' 'root:x:0:' 'nobody:x:65534:' >"$BB/etc/group"
BBV=${BUSYBOX_DEB#*=}; BBV=${BBV#*:}; BBV=${BBV%%-*}
image busybox "$REPO/busybox:$BBV" --layer "$BB" --entrypoint '["/bin/sh"]'
image pause "$REPO/pause:$BBV" --layer "$BB" --entrypoint '["/bin/sleep","2147483647"]' --user 65535:65535

# --- kubectl, coredns ---------------------------------------------------------------------------------------
KTOOLS=${ENVTEST_TOOLS:-$HOME/.cache/rtcd-rs/tools}/${KUBECTL_WHEEL//==/-}/bin
[ -x "$KTOOLS/kubectl" ] || "$ROOT/e2e/envtest/build.sh" >/dev/null
KV=$("$KTOOLS/kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')
K=$WORK/kubectl; mkdir -p "$K/usr/local/bin" "$K/tmp"; chmod 1777 "$K/tmp"
install -m 0755 "$KTOOLS/kubectl" "$K/usr/local/bin/kubectl"
image kubectl "$REPO/kubectl:$KV" --layer "$K" --entrypoint '["/usr/local/bin/kubectl"]' --user 65532:65532
NODE_BIN=$("$ROOT/e2e/node/build.sh" | tail -n1)
C=$WORK/coredns; mkdir -p "$C"
install -m 0755 "$NODE_BIN/coredns" "$C/coredns"
image coredns "$REPO/coredns:$COREDNS_VERSION" --layer "$C" --entrypoint '["/coredns"]' --user 65532:65532
mv "$OUT/images.env.tmp" "$OUT/images.env"
