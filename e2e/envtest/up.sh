#!/usr/bin/env bash
# Start the envtest control plane: etcd -> kube-apiserver -> kube-controller-manager -> kube-scheduler -> kwok.
#
#   RUN=$(e2e/envtest/up.sh [RUN_DIR] | tail -n1); . "$RUN/env"; ...; e2e/envtest/down.sh "$RUN"
#
# Everything listens on 127.0.0.1 only, on free ports. With ENVTEST_ADVERTISE_IP (an address of the
# caller's own network namespace: e2e/node) the apiserver also listens there and advertises it, so
# pods reach it through the kubernetes Service (10.0.0.1:443, kube-proxy). Writes RUN/admin.kubeconfig, RUN/env
# (KUBECONFIG, ENVTEST_KUBECONFIG, PATH with kubectl/helm and the control-plane binaries), RUN/pids, RUN/logs/.
# Binaries come from build.sh (cache hit: instant), or from $ENVTEST_BIN if set. Exit 3 = SKIP (from build.sh).
# On failure everything started so far is stopped again.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck disable=SC1091
. "$HERE/versions.env"

log() { echo "envtest: $*" >&2; }
T0=$(date +%s%N)
elapsed() { echo "$(( ($(date +%s%N) - T0) / 1000000 ))ms"; }

RUN=${1:-}
if [ -z "$RUN" ]; then RUN=$(mktemp -d "${TMPDIR:-/tmp}/rtcd-envtest.XXXXXX"); fi
mkdir -p "$RUN/logs" "$RUN/pki" "$RUN/certs"
RUN=$(cd "$RUN" && pwd)
[ ! -s "$RUN/pids" ] || { log "$RUN/pids exists: a stack is already running there (down.sh it first)"; exit 1; }
: >"$RUN/pids"

if [ -n "${ENVTEST_BIN:-}" ]; then
  BIN=$ENVTEST_BIN
else
  rc=0; BIN=$("$HERE/build.sh" | tail -n1) || rc=$?
  [ "$rc" = 0 ] || exit "$rc"
fi
TOOLS=${ENVTEST_TOOLS:-$HOME/.cache/rtcd-rs/tools}/${KUBECTL_WHEEL//==/-}/bin
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok; do
  [ -x "$BIN/$b" ] || { log "missing $BIN/$b"; exit 1; }
done

# --- teardown on failure ------------------------------------------------------------------------------
fail() {
  log "FAILED: $*"
  local f; for f in "$RUN"/logs/*.log; do [ -f "$f" ] && { echo "--- tail $f" >&2; tail -n 15 "$f" >&2; }; done
  "$HERE/down.sh" --keep "$RUN" >&2 || true
  exit 1
}
trap 'fail "line $LINENO: $BASH_COMMAND"' ERR

# In a fresh network namespace (unshare -n) loopback starts down. (Ask ip, not /sys/class/net: sysfs shows
# the network namespace it was mounted in, not ours.)
if command -v ip >/dev/null && ! ip -o link show dev lo | grep -qE '[<,]UP[,>]'; then
  log "bringing up lo"; ip link set dev lo up
fi

# --- free ports (bind 0 on 127.0.0.1) -------------------------------------------------------------------
read -r ETCD_PORT ETCD_PEER_PORT API_PORT < <(python3 - <<'PY'
import socket
socks = []
for _ in range(3):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(*[s.getsockname()[1] for s in socks])
for s in socks: s.close()
PY
)

# --- PKI + token ---------------------------------------------------------------------------------------
PKI=$RUN/pki
(
  cd "$PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 3650 -subj "/CN=rtcd-envtest-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  printf '%s\n' "basicConstraints=CA:FALSE" "keyUsage=critical,digitalSignature,keyEncipherment" \
    "extendedKeyUsage=serverAuth" \
    "subjectAltName=IP:127.0.0.1,${ENVTEST_ADVERTISE_IP:+IP:$ENVTEST_ADVERTISE_IP,}DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.0.0.1" \
    >apiserver.ext
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt -days 3650 \
    -extfile apiserver.ext 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
echo "$TOKEN,admin,admin-uid,\"system:masters\"" >"$RUN/tokens.csv"
chmod 600 "$RUN/tokens.csv" "$PKI"/*.key

KUBECONFIG_FILE=$RUN/admin.kubeconfig
cat >"$KUBECONFIG_FILE" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority: $PKI/ca.crt
users:
- name: admin
  user:
    token: $TOKEN
contexts:
- name: envtest
  context: {cluster: envtest, user: admin, namespace: default}
current-context: envtest
EOF
chmod 600 "$KUBECONFIG_FILE"

start() { # name cmd... ; records "PID name" in RUN/pids
  local name=$1; shift
  "$@" </dev/null >"$RUN/logs/$name.log" 2>&1 &
  echo "$! $name" >>"$RUN/pids"
}
alive() { # name -> fails if that recorded process died
  local pid; pid=$(awk -v n="$1" '$2==n{print $1}' "$RUN/pids")
  kill -0 "$pid" 2>/dev/null
}
# poll CMD until it succeeds: wait_for WHAT PROCESS SECONDS cmd...
wait_for() {
  local what=$1 proc=$2 secs=$3 i; shift 3
  for ((i = 0; i < secs * 10; i++)); do
    if "$@" >/dev/null 2>&1; then log "$what after $(elapsed)"; return 0; fi
    alive "$proc" || fail "$proc exited while waiting for $what"
    sleep 0.1
  done
  fail "timed out after ${secs}s waiting for $what"
}
api_get() { curl -sf --max-time 2 --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT$1"; }

# --- etcd (data on tmpfs when available) ----------------------------------------------------------------
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  ETCD_DIR=$(mktemp -d /dev/shm/rtcd-envtest-etcd.XXXXXX)
else
  ETCD_DIR=$RUN/etcd-data
fi
echo "$ETCD_DIR" >"$RUN/etcd-dir"
start etcd "$BIN/etcd" --name envtest --data-dir "$ETCD_DIR/data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "envtest=http://127.0.0.1:$ETCD_PEER_PORT" --unsafe-no-fsync --log-level warn
wait_for "etcd ready" etcd 30 curl -sf --max-time 2 "http://127.0.0.1:$ETCD_PORT/readyz"

# --- kube-apiserver --------------------------------------------------------------------------------------
# The audit log records every request of a ServiceAccount (the operator runs as one; the control
# plane's own components and the tests do not): tests count the operator's reads and writes there.
cat >"$RUN/audit-policy.yaml" <<'EOF_POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    userGroups: ["system:serviceaccounts"]
  - level: None
EOF_POLICY
API_BIND=(--bind-address=127.0.0.1 --advertise-address=127.0.0.1 --endpoint-reconciler-type=none)
if [ -n "${ENVTEST_ADVERTISE_IP:-}" ]; then
  API_BIND=(--bind-address=0.0.0.0 --advertise-address="$ENVTEST_ADVERTISE_IP" --endpoint-reconciler-type=lease
            --kubelet-preferred-address-types=InternalIP,Hostname)   # logs/exec reach a real kubelet by IP
fi
start kube-apiserver "$BIN/kube-apiserver" \
  --audit-policy-file="$RUN/audit-policy.yaml" --audit-log-path="$RUN/audit.log" --audit-log-format=json \
  --audit-log-mode=blocking \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  "${API_BIND[@]}" --secure-port="$API_PORT" \
  --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" --client-ca-file="$PKI/ca.crt" \
  --token-auth-file="$RUN/tokens.csv" --authorization-mode=RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.0.0.0/24 --allow-privileged=true \
  --disable-admission-plugins=TaintNodesByCondition --cert-dir="$RUN/certs"
wait_for "kube-apiserver /readyz" kube-apiserver 60 api_get /readyz

# --- kube-controller-manager, kube-scheduler -----------------------------------------------------------
# No node-lifecycle-controller: nodes keep the status tests give them (no heartbeats, no taints).
start kube-controller-manager "$BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG_FILE" \
  --leader-elect=false --bind-address=127.0.0.1 --secure-port=0 \
  --root-ca-file="$PKI/ca.crt" --service-account-private-key-file="$PKI/sa.key" --cluster-name=envtest \
  --controllers='*,-node-lifecycle-controller'
start kube-scheduler "$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG_FILE" \
  --leader-elect=false --bind-address=127.0.0.1 --secure-port=0

# --- kwok: fake kubelets for nodes labelled type=kwok; no server endpoint -------------------------------
# --cidr: pod IPs for non-hostNetwork pods are bookkeeping only (198.19.0.0/16, benchmarking range, unrouted).
start kwok "$BIN/kwok" --kubeconfig="$KUBECONFIG_FILE" --config="$HERE/kwok/stages.yaml" \
  --manage-nodes-with-label-selector=type=kwok --cidr=198.19.0.0/16

cat >"$RUN/env" <<EOF
export KUBECONFIG=$KUBECONFIG_FILE
export ENVTEST_KUBECONFIG=$KUBECONFIG_FILE
export ENVTEST_RUN=$RUN
export PATH=$TOOLS:$BIN:\$PATH
EOF

wait_for "serviceaccount default/default" kube-controller-manager 60 \
  api_get /api/v1/namespaces/default/serviceaccounts/default
for p in kube-scheduler kwok; do alive "$p" || fail "$p exited"; done
trap - ERR
log "up in $(elapsed): apiserver https://127.0.0.1:$API_PORT, logs in $RUN/logs; . $RUN/env"
echo "$RUN"
