#!/usr/bin/env bash
# The chart and the RtcdCluster on a REAL node (e2e/node: containerd + runc + CNI, kubelet and
# kube-proxy, CoreDNS) joined to the envtest control plane, with images built here
# (scripts/build-images.sh), all inside private network and mount namespaces:
#   - `helm install` with the set-up guide's exact command (README.md), overriding only the images;
#   - the operator runs as a pod from its image, with its Deployment's probes;
#   - the sysctl init container runs (privileged, as root) and reports what it could set;
#   - rtcd runs as uid 65532 with hostNetwork on the node's address, its probes run by the kubelet;
#   - `helm test` passes through the API Service's DNS name and ClusterIP (CoreDNS, kube-proxy);
#   - the images match their Dockerfiles (entrypoint, user, workdir, ports, env);
#   - `helm uninstall` runs the cleanup hook (kubectl image) and the node is left clean.
# Prints PASS/FAIL lines. Exit 3 = SKIP (no Go/module proxy).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}
fails=0
pass() { echo "PASS [node: $1]"; }
fail() { echo "FAIL [node: $1]"; fails=$((fails + 1)); }

if [ "${NODE_E2E_INNER:-}" != 1 ]; then
  # --- outside: packages, builds, images (they need the network) ---------------------------------
  # shellcheck disable=SC1091
  . "$ROOT/e2e/node/versions.env"
  missing=()
  for p in $NODE_APT; do dpkg -s "${p%%=*}" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "node-e2e: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  rc=0; ENVTEST_BIN=$("$ROOT/e2e/envtest/build.sh" | tail -n1) || rc=$?
  [ $rc = 0 ] || exit $rc
  rc=0; NODE_BIN=$("$ROOT/e2e/node/build.sh" | tail -n1) || rc=$?
  [ $rc = 0 ] || exit $rc
  IMAGES=$HOME/.cache/rtcd-rs/node-images
  "$ROOT/scripts/build-images.sh" "$IMAGES"
  WORK=$(mktemp -d /tmp/rtcd-node-e2e.XXXXXX)
  set +e
  NODE_E2E_INNER=1 WORK="$WORK" ENVTEST_BIN="$ENVTEST_BIN" NODE_BIN="$NODE_BIN" IMAGES="$IMAGES" \
    unshare -m -n --propagation private "$0"
  rc=$?
  set -e
  # Whatever the inner run left (it cannot have left processes in its namespaces' mounts, but cgroups
  # and shims live outside them): the same clean-up, from here.
  "$ROOT/e2e/node/down.sh" "$WORK/node" || true
  leftover=$(find /sys/fs/cgroup/*/ -maxdepth 1 -name "$(basename "$(cat "$WORK/node/cgroup-root" 2>/dev/null || echo none)")" 2>/dev/null || true)
  if [ -n "$leftover" ]; then echo "FAIL [node: cgroups left behind: $leftover]"; rc=1; fi
  rm -rf "$WORK"
  exit $rc
fi

# --- inside: private network and mount namespaces ------------------------------------------------------
NODE_IP=198.18.1.1
NODE_NAME=rtcd-node-1
ip link set lo up
ip link add rn0 type veth peer name rn1
ip addr add "$NODE_IP/24" dev rn0
ip addr add 198.18.1.2/24 dev rn1
ip link set rn0 up && ip link set rn1 up
# The set-up guide's ICE host override (rtcd.example.com) names the node's public address here, as
# the user's DNS would; hostNetwork pods get the node's /etc/hosts.
cp /etc/hosts "$WORK/hosts" && echo "$NODE_IP rtcd.example.com" >>"$WORK/hosts"
mount --bind "$WORK/hosts" /etc/hosts

cleanup() {
  "$ROOT/e2e/node/down.sh" --keep "$WORK/node" || true
  [ -n "${RUN:-}" ] && "$ROOT/e2e/envtest/down.sh" "$RUN" >/dev/null 2>&1 || true
}
trap cleanup EXIT
RUN=$(ENVTEST_ADVERTISE_IP=$NODE_IP "$ROOT/e2e/envtest/up.sh" "$WORK/envtest" | tail -n1)
# shellcheck disable=SC1090
. "$RUN/env"
"$ROOT/e2e/node/up.sh" "$WORK/node" "$NODE_NAME" "$NODE_IP" "$IMAGES" >/dev/null
# shellcheck disable=SC1091
. "$IMAGES/images.env"
SOCK=$WORK/node/containerd/containerd.sock
crictl() { "$NODE_BIN/crictl" --config "$WORK/node/crictl.yaml" "$@"; }

wait_until() { # secs cmd... (bounded poll)
  local secs=$1 i; shift
  for ((i = 0; i < secs * 2; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  return 1
}
jp() { kubectl "$@" 2>/dev/null || true; }

# --- the images are what their Dockerfiles say ----------------------------------------------------------
for b in rtcd rtcd-operator; do
  df=$ROOT/Dockerfile.rtcd; [ $b = rtcd ] || df=$ROOT/Dockerfile.operator
  ref=$rtcd; [ $b = rtcd ] || ref=$rtcd_operator
  got=$(crictl inspecti -o json "$ref" | python3 -c '
import json, sys
c = json.load(sys.stdin)["info"]["imageSpec"]["config"]
print(json.dumps({"entrypoint": c.get("Entrypoint"), "user": c.get("User"), "workdir": c.get("WorkingDir", ""),
                  "ports": sorted(c.get("ExposedPorts", {})), "env": sorted(e for e in c.get("Env", []) if not e.startswith("PATH="))}))')
  # The Dockerfile, read independently of scripts/oci-image.py: grep the final stage's lines.
  want=$(python3 - "$df" <<'PY'
import json, re, sys
text = re.sub(r"\\\n", " ", open(sys.argv[1]).read())
final = [l.strip() for l in text.split("\n") if l.strip() and not l.lstrip().startswith("#")]
final = final[max(i for i, l in enumerate(final) if l.upper().startswith("FROM ")):]
get = lambda k: [l[len(k) + 1:].strip() for l in final if l.upper().startswith(k + " ")]
env = []
for l in get("ENV"):
    env += re.findall(r"(\S+=\S+)", l)
print(json.dumps({"entrypoint": json.loads(get("ENTRYPOINT")[-1]), "user": (get("USER") or [""])[-1],
                  "workdir": (get("WORKDIR") or [""])[-1],
                  "ports": sorted(p for l in get("EXPOSE") for p in l.split()), "env": sorted(env)}))
PY
)
  if [ "$got" = "$want" ]; then pass "image $ref matches $(basename "$df"): $got"; else fail "image $ref: $got, Dockerfile: $want"; fi
done

# --- helm install: the set-up guide's command, images local ----------------------------------------------
BB_PINNED="${busybox%:*}@${busybox_DIGEST}"
t0=$(date +%s)
if out=$(cd "$ROOT" && helm install mattermost-rtcd ./charts/mattermost-rtcd --namespace mattermost --create-namespace \
    --set ingress.enabled=true --set ingress.host=rtcd.example.com \
    --set service.annotations."service\.beta\.kubernetes\.io/aws-load-balancer-backend-protocol"=udp \
    --set rtcd.ice.hostOverride=rtcd.example.com \
    --set image.repository="${rtcd%:*}" --set operator.image.repository="${rtcd_operator%:*}" \
    --set "operator.sysctlImages[0]=$BB_PINNED" --set rtcdCluster.spec.sysctls.image="$BB_PINNED" \
    --set cleanup.image="$kubectl" --set tests.image="$busybox" \
    --wait --timeout 180s 2>&1); then
  pass "helm install (set-up guide's command) with the operator Ready in $(( $(date +%s) - t0 ))s"
else
  echo "$out"; jp get events -A --sort-by=.lastTimestamp | tail -n 30; fail "helm install"
fi
OP_POD=$(jp -n mattermost get pods -l app.kubernetes.io/component=operator -o jsonpath='{.items[0].metadata.name}')
if [ -n "$OP_POD" ] && [ "$(jp -n mattermost get pod "$OP_POD" -o jsonpath='{.status.containerStatuses[0].ready}')" = true ]; then
  pass "the operator runs as pod $OP_POD from $(jp -n mattermost get pod "$OP_POD" -o jsonpath='{.spec.containers[0].image}'), Ready by its probes"
else
  jp -n mattermost describe pods; fail "operator pod not ready"
fi

rtcd_pod() { jp -n mattermost get pods -l app.kubernetes.io/name=rtcd -o jsonpath='{.items[0].metadata.name}'; }
rtcd_ready() { [ "$(jp -n mattermost get pods -l app.kubernetes.io/name=rtcd -o jsonpath='{.items[0].status.containerStatuses[0].ready}')" = true ]; }
if wait_until 180 rtcd_ready; then
  POD=$(rtcd_pod)
  pass "rtcd pod $POD Ready on $(jp -n mattermost get pod "$POD" -o jsonpath='{.spec.nodeName}') after $(( $(date +%s) - t0 ))s"
else
  jp -n mattermost get pods -o wide; jp -n mattermost describe pods; jp -n mattermost logs -l app.kubernetes.io/component=operator --tail=40
  fail "rtcd pod not Ready"
  POD=$(rtcd_pod)
fi

# --- the disruption budget syncs in the real disruption controller and allows an eviction ---------------
pdb_allows() { [ "$(jp -n mattermost get pdb mattermost-rtcd -o jsonpath='{.status.disruptionsAllowed}')" = 1 ]; }
if wait_until 30 pdb_allows; then
  pass "PodDisruptionBudget: disruptionsAllowed 1 of 1 instance (minAvailable $(jp -n mattermost get pdb mattermost-rtcd -o jsonpath='{.spec.minAvailable}'))"
else
  jp -n mattermost get pdb mattermost-rtcd -o yaml; fail "PodDisruptionBudget allows no eviction"
fi

# --- the sysctl init container ------------------------------------------------------------------------------
INIT=$(jp -n mattermost get pod "$POD" -o jsonpath='{.spec.initContainers[0].name}')
code=$(jp -n mattermost get pod "$POD" -o jsonpath='{.status.initContainerStatuses[0].state.terminated.exitCode}')
priv=$(jp -n mattermost get pod "$POD" -o jsonpath='{.spec.initContainers[0].securityContext.privileged}')
init_log=$(kubectl -n mattermost logs "$POD" -c "$INIT" 2>&1 || true)
rmem=$(cat /proc/sys/net/core/rmem_max)
if [ "$code" = 0 ] && [ "$priv" = true ] && echo "$init_log" | grep -q 'net.core.rmem_max'; then
  pass "sysctl init container $INIT ran privileged, exit 0; log: $(echo "$init_log" | tr '\n' ' '); net.core.rmem_max read back on the node: $rmem"
else
  fail "sysctl init container: exit '$code', privileged '$priv', log: $init_log"
fi

# --- rtcd: uid 65532, host network, node address, probes by the kubelet ----------------------------------------
RPID=$(crictl inspect -o json "$(crictl ps -q --name '^rtcd$' | head -n1)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["pid"])')
uid=$(awk '/^Uid:/{print $2}' "/proc/$RPID/status" 2>/dev/null || true)
if [ "$uid" = 65532 ]; then pass "rtcd (pid $RPID) runs as uid 65532"; else fail "rtcd uid '$uid'"; fi
if [ "$(readlink "/proc/$RPID/ns/net")" = "$(readlink /proc/self/ns/net)" ] && [ "$(jp -n mattermost get pod "$POD" -o jsonpath='{.status.podIP}')" = "$NODE_IP" ]; then
  pass "rtcd shares the node's network namespace; podIP $NODE_IP"
else
  fail "rtcd not on the host network at $NODE_IP"
fi
health=$(curl -s --max-time 3 "http://$NODE_IP:8045/api/v1/health" || true)
if echo "$health" | grep -q '"status":"ok"'; then pass "rtcd answers on the node's address: $health"; else fail "rtcd health on $NODE_IP: $health"; fi
probe_count() { # kind -> successful probes of rtcd's container in this pod, from the kubelet's /metrics/probes
  curl -sk --max-time 5 "https://$NODE_IP:10250/metrics/probes" | grep -E '^prober_probe_total\{' \
    | grep 'container="rtcd"' | grep "pod=\"$POD\"" | grep "probe_type=\"$1\"" | grep 'result="successful"' \
    | awk '{s+=$NF} END {print s+0}' || true
}
for kind in Startup Readiness Liveness; do   # liveness runs every 10 s once started
  for ((i = 0; i < 30; i++)); do n=$(probe_count "$kind"); [ "${n:-0}" -ge 1 ] && break; sleep 1; done
  if [ "${n:-0}" -ge 1 ]; then pass "kubelet ran rtcd's $kind probe ($n successful)"; else fail "no successful $kind probe by the kubelet"; fi
done

# --- helm test: DNS name and ClusterIP ------------------------------------------------------------------------
SVC_IP=$(jp -n mattermost get svc mattermost-rtcd -o jsonpath='{.spec.clusterIP}')
if out=$(helm test mattermost-rtcd -n mattermost --logs --timeout 120s 2>&1) \
    && echo "$out" | grep -q 'GET http://mattermost-rtcd.mattermost.svc:8045/api/v1/health' && echo "$out" | grep -q '"status":"ok"'; then
  pass "helm test through http://mattermost-rtcd.mattermost.svc:8045 (ClusterIP $SVC_IP, kube-proxy, CoreDNS)"
else
  echo "$out"; fail "helm test"
fi

# Debugging: NODE_E2E_HOLD=<file> keeps the node up (nsenter -t <pid in NODE_RUN/pids> -m -n) until <file> is removed.
if [ -n "${NODE_E2E_HOLD:-}" ]; then
  touch "$NODE_E2E_HOLD"; echo "node-e2e: holding until $NODE_E2E_HOLD is removed (KUBECONFIG=$KUBECONFIG)"
  while [ -e "$NODE_E2E_HOLD" ]; do sleep 1; done
fi
# --- helm uninstall: the cleanup hook (kubectl image) drains and removes the RtcdCluster -----------------------
if out=$(helm uninstall mattermost-rtcd -n mattermost --wait --timeout 180s 2>&1) \
    && ! kubectl -n mattermost get rtcdclusters.rtcd-rs.dev mattermost-rtcd >/dev/null 2>&1 \
    && wait_until 60 sh -c '[ -z "$(crictl pods -q --namespace mattermost --state ready)" ]'; then
  pass "helm uninstall: the cleanup hook removed the RtcdCluster; no pod left on the node"
else
  echo "$out"; jp -n mattermost get pods,jobs; fail "helm uninstall"
fi

trap - EXIT
cleanup
[ $fails -eq 0 ]
