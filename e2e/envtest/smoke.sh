#!/usr/bin/env bash
# Smoke test of the envtest stack, run in a private network namespace (needs root for unshare -n):
# two kwok Nodes on netns test-host addresses, a hostNetwork Pod + headless Service; checks that the Pod
# goes Running/Ready with the node's InternalIP, that the EndpointSlice follows a Ready=False status patch
# (and kwok does not revert it), and that deletion completes. Prints timings and the stack's RSS.
#   sudo e2e/envtest/smoke.sh          (exit 3 = SKIP, as build.sh)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [ "${ENVTEST_SMOKE_IN_NETNS:-}" != 1 ]; then
  # build (or find) the binaries outside the netns: the module proxy is not reachable inside it
  rc=0; "$HERE/build.sh" >/dev/null || rc=$?
  [ "$rc" = 0 ] || exit "$rc"
  exec env ENVTEST_SMOKE_IN_NETNS=1 unshare -n "$0" "$@"
fi

log() { echo "smoke: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }
# test-host addresses on a veth pair (the dummy link type is not available on every kernel, veth is)
ip link set lo up
ip link add n0 type veth peer name n0p
ip link set n0 up
ip link set n0p up
ip addr add 198.18.1.1/24 dev n0
ip addr add 198.18.1.2/24 dev n0

T=$(date +%s%N)
RUN=$("$HERE/up.sh" | tail -n1)
UP_MS=$(( ($(date +%s%N) - T) / 1000000 ))
trap '"$HERE/down.sh" ${ENVTEST_KEEP:+--keep} "$RUN"' EXIT
# shellcheck disable=SC1091
. "$RUN/env"

poll() { # poll SECONDS cmd... (until cmd succeeds)
  local secs=$1 i; shift
  for ((i = 0; i < secs * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
is() { [ "$("$1")" = "$2" ]; }   # is FUNC VALUE: FUNC's output (re-evaluated on each poll) equals VALUE

for i in 1 2; do
  kubectl create -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i}
status:
  addresses:
  - {type: InternalIP, address: 198.18.1.$i}
  - {type: ExternalIP, address: 203.0.113.$i}
  - {type: Hostname, address: kwok-node-$i}
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: fake, lastHeartbeatTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z"}
EOF
done
node_ok() {
  [ "$(kubectl get node kwok-node-1 -o jsonpath='{.status.addresses[?(@.type=="InternalIP")].address}/{.status.addresses[?(@.type=="ExternalIP")].address}/{.status.conditions[?(@.type=="Ready")].status}/{.spec.taints}')" = "198.18.1.1/203.0.113.1/True/" ]
}
node_ok || die "node status did not stick on create: $(kubectl get node kwok-node-1 -o yaml)"

kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata: {name: smoke, namespace: default, labels: {app: smoke}}
spec:
  nodeName: kwok-node-1
  hostNetwork: true
  containers: [{name: main, image: example.invalid/none:0, ports: [{containerPort: 8045}]}]
---
apiVersion: v1
kind: Service
metadata: {name: smoke, namespace: default}
spec:
  clusterIP: None
  selector: {app: smoke}
  ports: [{name: api, port: 8045}]
EOF
T=$(date +%s%N)
pod() { kubectl get pod smoke -o jsonpath='{.status.phase}/{.status.conditions[?(@.type=="Ready")].status}/{.status.podIP}/{.status.hostIP}'; }
poll 30 is pod "Running/True/198.18.1.1/198.18.1.1" || die "pod not Running/Ready on 198.18.1.1: $(pod)"
log "pod Running/Ready podIP=hostIP=198.18.1.1 after $(( ($(date +%s%N) - T) / 1000000 ))ms"
eps() { kubectl get endpointslice -l kubernetes.io/service-name=smoke -o jsonpath='{.items[*].endpoints[*].addresses[0]}/{.items[*].endpoints[*].conditions.ready}'; }
poll 30 is eps "198.18.1.1/true" || die "EndpointSlice not ready with 198.18.1.1: $(eps)"
log "EndpointSlice: $(eps)"

kubectl patch pod smoke --subresource=status --type=strategic \
  -p '{"status":{"conditions":[{"type":"Ready","status":"False","reason":"ReadinessProbeFailed"}]}}' >/dev/null
poll 30 is eps "198.18.1.1/false" || die "EndpointSlice did not follow Ready=False: $(eps)"
log "after Ready=False patch, EndpointSlice: $(eps)"
sleep 5
test "$(pod)" = "Running/False/198.18.1.1/198.18.1.1" || die "Ready=False was reverted: $(pod)"
test "$(eps)" = "198.18.1.1/false" || die "EndpointSlice changed back: $(eps)"
log "5 s later still Ready=False (kwok did not revert): $(pod)"

T=$(date +%s%N)
kubectl delete pod smoke --wait=false >/dev/null
poll 30 bash -c '! kubectl get pod smoke' || die "pod deletion did not complete"
log "pod deleted after $(( ($(date +%s%N) - T) / 1000000 ))ms"
node_ok || die "kwok changed node status: $(kubectl get node kwok-node-1 -o yaml)"
log "node status untouched by kwok"

RSS=0
while read -r pid name; do
  kb=$(awk '/^VmRSS/{print $2}' "/proc/$pid/status"); RSS=$((RSS + kb)); log "  $name RSS $((kb / 1024)) MiB"
done <"$RUN/pids"
log "stack RSS $((RSS / 1024)) MiB; up.sh took ${UP_MS}ms"
echo "smoke: 1 passed, 0 failed"
