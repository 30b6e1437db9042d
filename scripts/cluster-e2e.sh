#!/usr/bin/env bash
# The cluster-agnostic suite (e2e/cluster, package rtcd-e2e) against this project's local real
# control plane (e2e/envtest), since CI has no Docker engine for kind. Inside a private network
# namespace: two kwok nodes whose addresses sit on a veth, a real rtcd on each address (what
# the rtcd image would run there), and the operator as a process (the chart's operator
# Deployment would be a kwok pod that runs nothing). The suite itself only sees KUBECONFIG.
#   scripts/cluster-e2e.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}
if [ "${CLUSTER_E2E_IN_NETNS:-}" != 1 ]; then
  BIN=$("$ROOT/e2e/envtest/build.sh" | tail -n1)
  cargo build --locked -q -p rtcd --bin rtcd -p rtcd-operator --bin rtcd-operator --features rtcd/fault-injection
  TEST=$("$ROOT/e2e/lib/cargo-test-bin.sh" rtcd-e2e cluster)
  exec env CLUSTER_E2E_IN_NETNS=1 ENVTEST_BIN="$BIN" TEST_BIN="$TEST" unshare -n "$0" "$@"
fi

ip link set lo up
ip link add c0 type veth peer name c1
ip link set c1 up
ip link set c0 up
NODES=(198.18.2.1 198.18.2.2)
for a in "${NODES[@]}"; do ip addr add "$a/24" dev c0; done
RUN=$("$ROOT/e2e/envtest/up.sh" | tail -n1)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  "$ROOT/e2e/envtest/down.sh" "$RUN"
}
trap cleanup EXIT
# shellcheck disable=SC1091
. "$RUN/env"
NS=rtcd-e2e
KEY=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')
kubectl create namespace "$NS" >/dev/null
kubectl -n "$NS" create secret generic e2e-admin --from-literal=adminSecretKey="$KEY" >/dev/null
i=0
for a in "${NODES[@]}"; do
  i=$((i + 1))
  kubectl apply -f - >/dev/null <<EOF2
apiVersion: v1
kind: Node
metadata:
  name: e2e-node-$i
  labels: {type: kwok, rtcd-rs.dev/e2e-pool: "true", kubernetes.io/hostname: e2e-node-$i}
spec: {}
status:
  addresses: [{type: InternalIP, address: "$a"}, {type: Hostname, address: e2e-node-$i}]
  capacity: {cpu: "8", memory: 16Gi, pods: "110"}
  allocatable: {cpu: "8", memory: 16Gi, pods: "110"}
  conditions: [{type: Ready, status: "True", reason: KubeletReady, message: kwok}]
EOF2
  mkdir -p "$RUN/rtcd-$i"
  env RTCD_API_HTTP_LISTENADDRESS="$a:8045" RTCD_RTC_ICEADDRESSUDP="$a" RTCD_RTC_ICEADDRESSTCP="$a" \
    RTCD_RTC_UDPSOCKETSCOUNT=1 RTCD_STORE_DATASOURCE="$RUN/rtcd-$i/db" RTCD_LOGGER_ENABLEFILE=false \
    RTCD_API_SECURITY_ENABLEADMIN=true RTCD_API_SECURITY_ADMINSECRETKEY="$KEY" \
    RTCD_API_SECURITY_ALLOWSELFREGISTRATION=true \
    "$CARGO_TARGET_DIR/debug/rtcd" >"$RUN/logs/rtcd-$i.log" 2>&1 &
  PIDS+=($!)
done
RUST_LOG=info,kube=warn "$CARGO_TARGET_DIR/debug/rtcd-operator" --admin-address 127.0.0.1:0 \
  --lease-namespace "$NS" >"$RUN/logs/operator.log" 2>&1 &
PIDS+=($!)
export E2E_NAMESPACE=$NS E2E_NODE_LABEL=rtcd-rs.dev/e2e-pool E2E_HELM=helm
export E2E_SET="operator.enabled=false,cleanup.enabled=false,rtcdCluster.spec.credentials.name=e2e-admin,rtcdCluster.spec.sysctls.enabled=false"
set +e
"$TEST_BIN" --ignored --nocapture --test-threads=1
rc=$?
set -e

# The kubectl door on the same control plane: the CRD, the operator manifest, the minimal
# example, and the example reaches Ready (the running operator process reconciles it; the
# manifest's operator Deployment is a kwok pod).
T0=$(date +%s)
if kubectl apply --server-side -f "$ROOT/crds/rtcdclusters.yaml" >/dev/null \
  && kubectl apply -f "$ROOT/manifests/operator.yaml" >/dev/null \
  && kubectl create namespace mattermost >/dev/null \
  && kubectl apply -n mattermost -f "$ROOT/manifests/examples/minimal.yaml" >/dev/null \
  && kubectl -n mattermost wait rtcdcluster/calls --for=condition=Ready --timeout=120s >/dev/null \
  && kubectl -n rtcd-system get deployment rtcd-operator >/dev/null; then
  echo "PASS [manifests: crds/ + manifests/operator.yaml + examples/minimal.yaml reach Ready ($(kubectl -n mattermost get rtcdcluster calls -o jsonpath='{.status.readyNodes}') nodes, $(( $(date +%s) - T0 ))s)]"
else
  echo "FAIL [manifests: crds/ + manifests/operator.yaml + examples/minimal.yaml did not reach Ready]"
  kubectl -n mattermost get rtcdcluster calls -o yaml 2>&1 | tail -n 30
  rc=1
fi
[ $rc -eq 0 ] || { echo "--- operator log"; tail -n 30 "$RUN/logs/operator.log"; }
exit $rc
