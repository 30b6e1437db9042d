#!/usr/bin/env bash
# The chart and the RtcdCluster on a REAL node (e2e/node: containerd + runc + CNI, kubelet and
# kube-proxy, CoreDNS) joined to the envtest control plane, with images built here
# (scripts/build-images.sh), all inside private network and mount namespaces:
#   - `helm install` with the set-up guide's exact command (README.md), overriding only the images;
#   - the operator runs as a pod from its image, with its Deployment's probes;
#   - the sysctl init container runs (privileged, as root) and reports what it could set;
#   - rtcd runs as uid 65532 with hostNetwork on the node's address, its probes run by the kubelet;
#   - `helm test` passes through the API Service's DNS name and ClusterIP (CoreDNS, kube-proxy);
#   - rtcd's Go service.Client and pion peers hold a call through the pod; a spec change during a
#     live call: preStop `rtcd --wait-idle` holds the old pod, its endpoint leaves the ready set at
#     once, media goes on until the call leaves, then the new pod becomes Ready;
#   - kill -9 of rtcd: the kubelet restarts it, the RtcdCluster status shows it, the client reconnects;
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
  rc=0; COMPAT_TEST_BIN=$("$ROOT/e2e/compat/build-test.sh" | tail -n1) || rc=$?
  [ $rc = 0 ] || exit $rc
  export COMPAT_TEST_BIN
  mkdir -p "$HOME/.cache/rtcd-rs/node-runs"
  WORK=$(mktemp -d "$HOME/.cache/rtcd-rs/node-runs/run.XXXXXX")
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
    --set rtcdCluster.spec.probe.intervalSeconds=5 --set rtcdCluster.spec.probe.timeoutSeconds=3 \
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

# --- a call through the pod: rtcd's Go service.Client (the plugin's) and pion peers ------------------------
secret() { kubectl -n mattermost get secret "$1" -o jsonpath="{.data.$2}" | base64 -d; }
CID=$(secret mattermost-rtcd-plugin-client clientID)
AKEY=$(secret mattermost-rtcd-plugin-client authKey)
ADMIN=$(secret mattermost-rtcd-credentials adminSecretKey)
# Go's own "--- PASS" lines stay out of this log (the summary counts them); shown on failure.
compat() { env RTCD_URL="http://$NODE_IP:8045" COMPAT_LABEL=rtcd-rs-node "$@"; }
go_passed() { grep -q -- "--- PASS: $2" "$1" && ! grep -q -- '--- FAIL' "$1"; }
show() { sed 's/^\(\s*\)--- \(PASS\|FAIL\)/\1-- \2/' "$1" | tail -n "${2:-40}"; }
compat COMPAT_CLIENT_ID="$CID" COMPAT_AUTH_KEY="$AKEY" timeout 240 "$COMPAT_TEST_BIN" -test.run '^TestConfiguredClient$' -test.v \
  >"$WORK/call.log" 2>&1 || true
if go_passed "$WORK/call.log" TestConfiguredClient; then
  pass "service.Client with the chart's plugin client: two pion peers join and exchange audio through the pod (ICE to rtcd.example.com = $NODE_IP)"
else
  show "$WORK/call.log"; fail "call through the pod"
fi

# --- the operator's connectivity canary, from its pod: reachable, then UDP dropped by nftables --------------
probe_of() { jp -n mattermost get rtcdcluster mattermost-rtcd -o jsonpath="{.status.nodes[0].probe$1}"; }
cond_of() { jp -n mattermost get rtcdcluster mattermost-rtcd -o jsonpath="{.status.conditions[?(@.type==\"ProbeFailed\")]$1}"; }
canary_ok() { [ "$(probe_of .result)" = Reachable ] && [ "$(probe_of '.transports[*].reachable')" = "true true" ] \
  && [ "$(cond_of .status)" = False ]; }
if wait_until 90 canary_ok; then
  pass "the operator's canary (from its pod $OP_POD) reaches $(probe_of '.transports[*].candidate') (RTT ms: $(probe_of '.transports[*].rttMs'))"
else
  jp -n mattermost get rtcdcluster mattermost-rtcd -o yaml | tail -n 40; fail "the operator's canary does not report the node Reachable"
fi
nft -f - <<EOF
table inet nodecanary {
  chain input {
    type filter hook input priority 0; policy accept;
    ip daddr $NODE_IP udp dport 8443 drop
  }
}
EOF
canary_failed() { [ "$(cond_of .status)" = True ] && [ "$(probe_of '.transports[0].reachable')" = false ] \
  && [ "$(probe_of '.transports[1].reachable')" = true ]; }
if wait_until 90 canary_failed; then
  ev=$(jp -n mattermost get events --field-selector reason=ProbeFailed -o jsonpath='{.items[0].message}')
  pass "UDP to $NODE_IP:8443 dropped: ProbeFailed $(cond_of .reason): '$(cond_of .message)'; ICE-TCP still reachable; event: '$ev'"
else
  jp -n mattermost get rtcdcluster mattermost-rtcd -o yaml | tail -n 40; fail "the canary did not report the UDP block"
fi
nft delete table inet nodecanary
if wait_until 90 canary_ok; then
  pass "UDP back: ProbeFailed False again; event: '$(jp -n mattermost get events --field-selector reason=ProbeSucceeded -o jsonpath='{.items[0].message}')'"
else
  fail "ProbeFailed did not clear once UDP was back"
fi

# --- a spec change while a call is live: preStop holds the old pod, its endpoint leaves at once -------------
pod_field() { jp -n mattermost get pod "$1" -o jsonpath="$2"; }
OLD=$(rtcd_pod); OLD_UID=$(pod_field "$OLD" '{.metadata.uid}')
prestop=$(pod_field "$OLD" '{.spec.containers[0].lifecycle.preStop.exec.command}')
HOLD=$WORK/hold-call
compat RTCD_ADMIN_KEY="$ADMIN" COMPAT_HOLD_FILE="$HOLD" COMPAT_HOLD_SECONDS=300 timeout 400 "$COMPAT_TEST_BIN" \
  -test.run '^TestHeldCall$' -test.v >"$WORK/held.log" 2>&1 &
HELD=$!
if wait_until 120 grep -q "holding the call" "$WORK/held.log"; then
  t_roll=$(date +%s)
  (cd "$ROOT" && helm upgrade mattermost-rtcd ./charts/mattermost-rtcd -n mattermost --reuse-values \
     --set rtcdCluster.spec.config.logLevel=debug >/dev/null)
  terminating() { [ -n "$(pod_field "$OLD" '{.metadata.deletionTimestamp}')" ]; }
  not_ready() { [ "$(jp -n mattermost get endpointslices -l kubernetes.io/service-name=mattermost-rtcd \
                    -o jsonpath='{.items[*].endpoints[*].conditions.ready}')" != true ]; }
  if wait_until 90 terminating; then
    t_term=$(date +%s)
    if wait_until 10 not_ready; then
      pass "the roll deletes $OLD $(( t_term - t_roll ))s after the spec change; its endpoint left the API Service's ready set within $(( $(date +%s) - t_term ))s"
    else
      fail "$OLD terminating but still a ready endpoint of the API Service"
    fi
    sleep 15
    sessions=$(curl -s --max-time 3 "http://$NODE_IP:8045/api/v1/health" || true)
    if [ "$(pod_field "$OLD" '{.metadata.uid}')" = "$OLD_UID" ] && kill -0 "$HELD" 2>/dev/null; then
      pass "preStop ($prestop) holds $OLD while its call lives: still there 15s after deletion; health $sessions"
    else
      show "$WORK/held.log"; fail "$OLD went away under a live call"
    fi
  else
    fail "the spec change did not roll $OLD within 90s"
  fi
else
  show "$WORK/held.log"; fail "the held call did not start"
fi
touch "$HOLD"
wait "$HELD" || true
if go_passed "$WORK/held.log" TestHeldCall; then
  pass "the call kept its media through the roll until it left"
else
  show "$WORK/held.log"; fail "the held call lost media during the roll"
fi
new_ready() {
  local p; p=$(rtcd_pod)
  [ -n "$p" ] && [ "$(pod_field "$p" '{.metadata.uid}')" != "$OLD_UID" ] && rtcd_ready
}
if wait_until 180 new_ready; then
  pass "then the new pod $(rtcd_pod) started and became Ready ($(( $(date +%s) - ${t_roll:-0} ))s after the spec change)"
else
  jp -n mattermost get pods -o wide; fail "no new Ready pod after the roll"
fi

# --- kill -9 of rtcd: the kubelet restarts it, status shows it, the plugin's client reconnects ---------------
POD=$(rtcd_pod)
RFILE=$WORK/restarted
compat COMPAT_CLIENT_ID="$CID" COMPAT_AUTH_KEY="$AKEY" COMPAT_RESTART_FILE="$RFILE" timeout 400 "$COMPAT_TEST_BIN" \
  -test.run '^TestReconnectsAfterRestart$' -test.v >"$WORK/restart.log" 2>&1 &
RT=$!
if wait_until 120 test -e "$RFILE.ready"; then
  RPID=$(crictl inspect -o json "$(crictl ps -q --name '^rtcd$' | head -n1)" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["pid"])')
  kill -KILL "$RPID"
  restarted() { [ "$(pod_field "$POD" '{.status.containerStatuses[0].restartCount}')" -ge 1 ] 2>/dev/null && rtcd_ready; }
  if wait_until 120 restarted; then
    pass "kill -9 of rtcd (pid $RPID): the kubelet restarted the container and it is Ready again"
  else
    jp -n mattermost get pods -o wide; fail "rtcd not restarted by the kubelet"
  fi
  status_restart() { [ "$(jp -n mattermost get rtcdcluster mattermost-rtcd -o jsonpath='{.status.nodes[0].restarts}')" = 1 ]; }
  if wait_until 60 status_restart; then
    pass "RtcdCluster status: restarts 1, lastRestart '$(jp -n mattermost get rtcdcluster mattermost-rtcd -o jsonpath='{.status.nodes[0].lastRestart}')'; event: $(jp -n mattermost get events --field-selector reason=InstanceRestarted -o jsonpath='{.items[0].message}')"
  else
    jp -n mattermost get rtcdcluster mattermost-rtcd -o yaml | tail -n 30; fail "the operator's status does not show the restart"
  fi
else
  show "$WORK/restart.log"; fail "the restart test did not get its call up"
fi
touch "$RFILE"
wait "$RT" || true
if go_passed "$WORK/restart.log" TestReconnectsAfterRestart; then
  pass "the plugin's service.Client reconnected by itself and a new call has media"
else
  show "$WORK/restart.log"; fail "service.Client after the restart"
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
