#!/usr/bin/env bash
# Tests of the Helm chart charts/mattermost-rtcd and the generated manifests/.
#   scripts/chart-test.sh
# One line per check: "PASS [chart: <what>] (<ms>)" or "FAIL [chart: <what>] (<ms>)" followed by
# the indented log of the failure (scripts/test-summary.sh counts these lines). Exit 1 if any failed;
# exit 3 = SKIP (as e2e/envtest/build.sh: no Go / module proxy for a cold build).
# CHART_TEST_VERBOSE=1 prints every check's log, not only those of failures.
#
# Offline: helm lint; renderings (defaults, Mattermost's set-up guide command, upstream-style
# values, operator-only, every RtcdCluster field, the operator-e2e RBAC) checked object by object;
# the first three also byte for byte against charts/tests/golden/{default,guide,upstream}.yaml
# (same helm invocation as charts/generate.sh: charts/tests/golden.sh); typos that must fail
# naming the key; charts/generate.sh --check.
# On a real control plane (e2e/envtest: etcd, kube-apiserver, KCM, scheduler, kwok; in a private
# network namespace): server-side dry-runs of every rendering and of manifests/; helm install
# --wait (one kwok Node makes the operator pod fake-Ready); the pre-delete drain hook; helm
# uninstall. kwok runs no containers, so this script plays the kubelet for the hook Job: it runs
# the Job's own kubectl arguments with the hook ServiceAccount's token, plays the operator by
# releasing the RtcdCluster's finalizer, then marks the pod Succeeded. The `helm test` pod needs a
# real rtcd behind the Service, so it is only rendered and dry-run.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHART=$ROOT/charts/mattermost-rtcd
# shellcheck disable=SC1091
. "$ROOT/e2e/envtest/versions.env"
TOOLS=${ENVTEST_TOOLS:-$HOME/.cache/rtcd-rs/tools}/${KUBECTL_WHEEL//==/-}/bin

if [ "${CHART_TEST_IN_NETNS:-}" != 1 ]; then
  # Outside the network namespace: build or find the control plane, kubectl and helm (cached).
  T=$(date +%s%N)
  rc=0; BIN=$("$ROOT/e2e/envtest/build.sh" | tail -n1) || rc=$?
  if [ "$rc" = 3 ]; then echo "chart-test: SKIP (e2e/envtest/build.sh cannot build the tools here)"; exit 3; fi
  if [ "$rc" != 0 ]; then echo "FAIL [chart: e2e/envtest/build.sh exited $rc]"; exit 1; fi
  echo "chart-test: tools ready in $(( ($(date +%s%N) - T) / 1000000 ))ms ($BIN)"
  NS_CMD=(unshare -n)
  [ "$(id -u)" = 0 ] || NS_CMD=(unshare -rn)   # rootless: a user namespace maps us to root
  exec env CHART_TEST_IN_NETNS=1 ENVTEST_BIN="$BIN" CHART_TEST_T0="$T" "${NS_CMD[@]}" "$0" "$@"
fi

T0=${CHART_TEST_T0:-$(date +%s%N)}
export PATH=$TOOLS:$PATH
W=$(mktemp -d "${TMPDIR:-/tmp}/rtcd-chart-test.XXXXXX")
export HELM_CONFIG_HOME=$W/helm/config HELM_CACHE_HOME=$W/helm/cache HELM_DATA_HOME=$W/helm/data
unset KUBECONFIG
RUN=""
cleanup() {
  if [ -n "$RUN" ]; then "$ROOT/e2e/envtest/down.sh" "$RUN" >/dev/null 2>&1 || true; fi
  rm -rf "$W"
}
trap cleanup EXIT

PASSED=0 FAILED=0
# check WHAT FUNC [ARGS...]: runs FUNC in a background subshell (so `set -e` applies inside it)
# with its output in a log, printed (indented) only on failure.
check() {
  local what=$1 rc=0 t log
  shift
  t=$(date +%s%N)
  log=$W/check.log
  "$@" >"$log" 2>&1 &
  wait $! || rc=$?
  local ms=$(( ($(date +%s%N) - t) / 1000000 ))
  if [ "$rc" = 0 ]; then
    PASSED=$((PASSED + 1)); echo "PASS [chart: $what] (${ms}ms)"
    if [ "${CHART_TEST_VERBOSE:-}" = 1 ]; then sed 's/^/    /' "$log"; fi
  else
    FAILED=$((FAILED + 1)); echo "FAIL [chart: $what] (${ms}ms)"
    tail -n 40 "$log" | sed 's/^/    /'
  fi
}

# GUIDE (the guide's --set command), UPSTREAM_VALUES, golden_render, GOLDEN_*: shared with charts/generate.sh
# shellcheck source=charts/tests/golden.sh
. "$ROOT/charts/tests/golden.sh"
RELEASE=$GOLDEN_RELEASE
NS=$GOLDEN_NAMESPACE
# render NAME [helm args...]: helm template of the chart into $W/NAME.yaml and (offline) $W/NAME.json
render() {
  local name=$1; shift
  helm template "$RELEASE" "$CHART" --namespace "$NS" "$@" >"$W/$name.yaml"
  to_json "$W/$name.yaml" >"$W/$name.json"
}
# render_golden NAME CASE: as render, with the invocation of charts/tests/golden/CASE.yaml
render_golden() {
  golden_render helm "$CHART" "$2" >"$W/$1.yaml"
  to_json "$W/$1.yaml" >"$W/$1.json"
}
to_json() { # YAML stream -> JSON stream, offline (a no-op local patch)
  kubectl patch --local -f "$1" --type merge -p '{}' -o json
}
# pyassert NAME: Python assertions (stdin) over the objects of $W/NAME.json:
#   objs; one(kind, name=None); env(container) -> {name: value or valueFrom}
cat >"$W/assert.py" <<'PY'
import json, sys
s = open(sys.argv[1]).read()
dec, i, objs = json.JSONDecoder(), 0, []
while True:
    while i < len(s) and s[i].isspace():
        i += 1
    if i >= len(s):
        break
    o, i = dec.raw_decode(s, i)
    objs.extend(o["items"] if o.get("kind") == "List" else [o])
kinds = sorted(o["kind"] for o in objs)
def one(kind, name=None):
    m = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(m) == 1, f"expected one {kind} {name or ''}, got {len(m)} (kinds: {kinds})"
    return m[0]
def env(c):
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}
# rbac_ok(ns, op, watch): the operator's RBAC objects (op = its name, ns = the release namespace,
# watch = operator.watchNamespace or "")
import os
def rbac_ok(ns, op, watch):
    kind_w = "Role" if watch else "ClusterRole"
    w = one(kind_w, op)
    assert w["rules"] == json.loads(os.environ["OPERATOR_RULES"]), "workload rules differ from the operator code"
    assert w["metadata"].get("namespace") == (watch or None), w["metadata"]
    b = one(kind_w + "Binding", op)
    assert b["roleRef"]["kind"] == kind_w and b["roleRef"]["name"] == op and b["metadata"].get("namespace") == (watch or None)
    subject = [{"kind": "ServiceAccount", "name": op, "namespace": ns}]
    assert b["subjects"] == subject, b["subjects"]
    assert one("ClusterRole", op + "-nodes")["rules"] == json.loads(os.environ["NODE_RULES"])
    assert one("ClusterRoleBinding", op + "-nodes")["subjects"] == subject
    lease = one("Role", op + "-lease")
    assert lease["metadata"]["namespace"] == ns
    assert lease["rules"] == [{"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": [op], "verbs": ["get", "update"]}], lease["rules"]
    assert one("RoleBinding", op + "-lease")["subjects"] == subject

exec(compile(sys.stdin.read(), "assertions", "exec"))
PY
pyassert() { python3 "$W/assert.py" "$W/$1.json"; }

# must_fail WHAT-IT-NAMES helm-args...: the rendering fails and the error names the key
must_fail() {
  local names=$1; shift
  if helm template "$RELEASE" "$CHART" "$@" >"$W/typo.out" 2>&1; then echo "rendered, but should fail: $*"; exit 1; fi
  grep -F -- "$names" "$W/typo.out" || { echo "error does not name '$names':"; cat "$W/typo.out"; exit 1; }
}

OPERATOR_RULES='[{"apiGroups": ["rtcd-rs.dev"], "resources": ["rtcdclusters"], "verbs": ["get", "list", "watch", "patch"]}, {"apiGroups": ["rtcd-rs.dev"], "resources": ["rtcdclusters/status"], "verbs": ["patch"]}, {"apiGroups": [""], "resources": ["pods", "services"], "verbs": ["get", "list", "watch", "create", "patch", "delete"]}, {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "delete"]}, {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}, {"apiGroups": ["policy"], "resources": ["poddisruptionbudgets"], "verbs": ["get", "create", "patch", "delete"]}, {"apiGroups": ["monitoring.coreos.com"], "resources": ["servicemonitors"], "verbs": ["get", "create", "patch", "delete"]}, {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]}]'
NODE_RULES='[{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list", "watch"]}]'
export OPERATOR_RULES NODE_RULES

# Every RtcdCluster field upstream lacks, through rtcdCluster.spec.
cat >"$W/values-full.yaml" <<'EOF'
rtcdCluster:
  name: calls
  labels: {team: calls}
  spec:
    credentials: {name: rtcd-admin, key: adminSecretKey}
    sysctls: {enabled: true, values: {net.core.rmem_max: 33554432}}
    podDisruptionBudget: {enabled: true, maxUnavailable: 2}
    serviceMonitor: {enabled: true, interval: 15s, labels: {release: prometheus}}
    config:
      allowSelfRegistration: true
      drainTimeout: 30m
      extraEnv: [{name: RTCD_RTC_ICEHOSTOVERRIDE, value: from-spec.example.com}]
      rtc:
        turnStaticAuthSecret: {name: coturn, key: static-auth-secret}
        iceServers:
          - urls: ["stun:stun.example.com:3478"]
          - urls: ["turn:turn.example.com:3478"]
    iceHostOverride:
      nodeAddress: ExternalIP
      fallback: [ExternalDNS, InternalIP]
      annotation: example.com/public-ipv4
      portOverride: {port: 30443, nodes: {media-1: 30444}}
    media:
      mode: LoadBalancer
      loadBalancer: {mixedProtocol: false, sourceRanges: [198.51.100.0/24]}
    drain: {terminationGracePeriodSeconds: 7200}
    clients: [{secretName: calls-extra}]
rtcd:
  ice: {hostOverride: ignored.example.com}
configuration:
  environmentVariables: {RTCD_RTC_ICEHOSTOVERRIDE: also-ignored.example.com, RTCD_LOGGER_CONSOLELEVEL: debug}
EOF

# ------------------------------------------------------------------------------------------------
# Offline checks

t_lint() { helm lint --strict "$CHART"; helm lint --strict "$CHART" -f "$UPSTREAM_VALUES"; }
check "helm lint --strict (defaults and upstream-style values)" t_lint

t_defaults() {
  render_golden defaults default
  pyassert defaults <<'PY'
import os
assert kinds == sorted(["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "ClusterRole", "ClusterRoleBinding",
                        "Role", "RoleBinding", "Deployment", "RtcdCluster",
                        "ServiceAccount", "Role", "RoleBinding", "Job", "Pod"]), kinds
d = one("Deployment", "mattermost-rtcd-operator")
p = d["spec"]["template"]["spec"]
c = p["containers"][0]
assert d["spec"]["replicas"] == 1
assert c["image"] == "ghcr.io/rtcd-rs/rtcd-operator:0.1.0", c["image"]
e = env(c)
assert e["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}, e
assert e["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}, e
assert "WATCH_NAMESPACE" not in e and e["LEASE_NAME"] == "mattermost-rtcd-operator" and e["ADMIN_ADDRESS"] == "0.0.0.0:8080"
assert c["ports"] == [{"name": "admin", "containerPort": 8080, "protocol": "TCP"}]
assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
sc = c["securityContext"]
assert sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"] and sc["capabilities"]["drop"] == ["ALL"]
assert p["securityContext"]["runAsNonRoot"] and p["securityContext"]["runAsUser"] == 65532
assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
assert p["serviceAccountName"] == one("ServiceAccount", "mattermost-rtcd-operator")["metadata"]["name"]
rbac_ok("chart-test", "mattermost-rtcd-operator", "")
assert "SYSCTL_IMAGES" not in e
r = one("RtcdCluster", "mattermost-rtcd")
assert r["apiVersion"] == "rtcd-rs.dev/v1alpha1" and r["metadata"]["namespace"] == "chart-test"
assert r["spec"] == {"image": "ghcr.io/rtcd-rs/rtcd:0.1.0", "imagePullPolicy": "IfNotPresent",
                     "clients": [{"secretName": "mattermost-rtcd-plugin-client", "generate": True, "clientId": "mattermost",
                                  "clientIdKey": "clientID", "authKeyKey": "authKey"}]}, r["spec"]
t = one("Pod")
assert t["metadata"]["annotations"]["helm.sh/hook"] == "test"
script = t["spec"]["containers"][0]["command"][2]
assert "http://mattermost-rtcd.chart-test.svc:8045/api/v1/health" in script and "http://mattermost-rtcd.chart-test.svc:8045/version" in script
j = one("Job")
assert j["metadata"]["annotations"]["helm.sh/hook"] == "pre-delete"
assert j["spec"]["template"]["spec"]["containers"][0]["args"][:3] == ["delete", "rtcdclusters.rtcd-rs.dev", "mattermost-rtcd"]
PY
  cmp "$ROOT/crds/rtcdclusters.yaml" "$CHART/crds/rtcdclusters.yaml"
}
check "helm template, default values: operator Deployment/RBAC, RtcdCluster, hooks" t_defaults

t_guide() {
  render_golden guide guide
  pyassert guide <<'PY'
r = one("RtcdCluster", "mattermost-rtcd")
assert {"name": "RTCD_RTC_ICEHOSTOVERRIDE", "value": "rtcd.example.com"} in r["spec"]["config"]["extraEnv"], r["spec"]
assert r["spec"]["api"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-backend-protocol": "udp"}, r["spec"]
ing = one("Ingress", "mattermost-rtcd")
rules = ing["spec"]["rules"]
assert [x["host"] for x in rules] == ["rtcd.example.com"], rules
backend = rules[0]["http"]["paths"][0]["backend"]["service"]
assert backend == {"name": "mattermost-rtcd", "port": {"number": 8045}}, backend
assert "ingressClassName" not in ing["spec"]
PY
}
check "helm template, the set-up guide's --set command: host override, annotation, Ingress -> :8045" t_guide

t_upstream() {
  render_golden upstream upstream
  pyassert upstream <<'PY'
s = one("RtcdCluster")["spec"]
env = {e["name"]: e["value"] for e in s["config"]["extraEnv"]}
assert env == {"RTCD_LOGGER_ENABLEFILE": "false", "RTCD_RTC_NACKBUFFERSIZE": "16777216",
               "RTCD_API_SECURITY_ALLOWSELFREGISTRATION": "true",
               "RTCD_RTC_ICESERVERS": '[{"urls":["stun:stun.example.com:3478"]}]'}, env
assert all(isinstance(v, str) for v in env.values())
assert s["media"] == {"mode": "LoadBalancer", "loadBalancer": {"annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}}}, s["media"]
assert "api" not in s
assert s["drain"] == {"terminationGracePeriodSeconds": 18000}
assert s["config"]["apiPort"] == 8045 and s["config"]["rtc"] == {"udpPort": 8443, "tcpPort": 8443}
assert s["image"] == "ghcr.io/rtcd-rs/rtcd:0.1.0" and s["imagePullPolicy"] == "Always"
assert s["imagePullSecrets"] == [{"name": "regcred"}]
assert s["nodeSelector"] == {"calls": "true"}
assert s["tolerations"][0]["key"] == "dedicated" and s["resources"]["limits"]["memory"] == "1Gi"
ing = one("Ingress")
assert ing["spec"]["ingressClassName"] == "nginx-calls" and ing["spec"]["tls"][0]["secretName"] == "rtcd-tls"
assert ing["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
assert ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"] == {"number": 8045}
assert one("Deployment")["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
PY
}
check "helm template, upstream-style values: LoadBalancer media, quoted environmentVariables, Ingress" t_upstream

t_notes() {
  helm install "$RELEASE" "$CHART" -n "$NS" --dry-run=client -f "$UPSTREAM_VALUES" >"$W/notes-upstream.txt"
  for w in "deploymentType=daemonset is ignored" "networking.hostNetwork=false is ignored" \
    "configuration.replicas is ignored" "configuration.updateStrategy is ignored" \
    "service.clusterIP is ignored" "Self-registration is on" "https://mattermost-rtcd.local"; do
    grep -qF "$w" "$W/notes-upstream.txt" || { echo "NOTES lack: $w"; cat "$W/notes-upstream.txt"; exit 1; }
  done
  helm install "$RELEASE" "$CHART" -n "$NS" --dry-run=client "${GUIDE[@]}" >"$W/notes-guide.txt"
  for w in "http://mattermost-rtcd.chart-test.svc:8045" "http://rtcd.example.com" \
    "Secret mattermost-rtcd-credentials, key adminSecretKey" \
    "kubectl -n chart-test get secret mattermost-rtcd-credentials -o jsonpath='{.data.adminSecretKey}' | base64 -d" \
    "rtcd.ice.hostOverride makes EVERY instance advertise the same address" "service.annotations are set on the API Services"; do
    grep -qF "$w" "$W/notes-guide.txt" || { echo "NOTES lack: $w"; cat "$W/notes-guide.txt"; exit 1; }
  done
  helm install "$RELEASE" "$CHART" -n "$NS" --dry-run=client -f "$W/values-full.yaml" >"$W/notes-full.txt"
  grep -qF "Secret rtcd-admin, key adminSecretKey" "$W/notes-full.txt" || { cat "$W/notes-full.txt"; exit 1; }
  helm install "$RELEASE" "$CHART" -n "$NS" --dry-run=client >"$W/notes-defaults.txt"
  if grep -q WARNING "$W/notes-defaults.txt"; then echo "warnings with default values:"; cat "$W/notes-defaults.txt"; exit 1; fi
}
check "NOTES: RTCD Service URL, Ingress host, credentials Secret + kubectl, warnings for ignored keys" t_notes

t_full() {
  render full -f "$W/values-full.yaml"
  pyassert full <<'PY'
r = one("RtcdCluster", "calls")
s = r["spec"]
assert r["metadata"]["labels"]["team"] == "calls"
assert s["credentials"] == {"name": "rtcd-admin", "key": "adminSecretKey"}
assert s["sysctls"]["values"] == {"net.core.rmem_max": "33554432"}, s["sysctls"]
assert s["podDisruptionBudget"]["maxUnavailable"] == 2 and s["serviceMonitor"]["labels"] == {"release": "prometheus"}
env = [(e["name"], e["value"]) for e in s["config"]["extraEnv"]]
assert env == [("RTCD_LOGGER_CONSOLELEVEL", "debug"), ("RTCD_RTC_ICEHOSTOVERRIDE", "from-spec.example.com")], env
assert s["media"]["mode"] == "LoadBalancer" and s["drain"]["terminationGracePeriodSeconds"] == 7200
assert one("Job")["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "--timeout=7320s"
assert [c["secretName"] for c in s["clients"]] == ["calls-plugin-client", "calls-extra"], s["clients"]
PY
}
check "helm template, every RtcdCluster field via rtcdCluster.spec (spec wins, extraEnv joined)" t_full

t_toggles() {
  render operator-only --set rtcdCluster.enabled=false
  pyassert operator-only <<'PY'
assert kinds == ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "Deployment",
                 "Role", "RoleBinding", "ServiceAccount"], kinds
PY
  # operator.watchNamespace: the workload rules become a Role there; sysctlImages reach the operator
  render scoped --set rtcdCluster.enabled=false --set operator.watchNamespace=calls \
    --set "operator.sysctlImages={busybox@sha256:$(printf 'a%.0s' {1..64})}"
  pyassert scoped <<'PY'
rbac_ok("chart-test", "mattermost-rtcd-operator", "calls")
assert [o for o in objs if o["kind"] == "ClusterRole"] == [one("ClusterRole", "mattermost-rtcd-operator-nodes")], "only Nodes are cluster-wide"
e = env(one("Deployment")["spec"]["template"]["spec"]["containers"][0])
assert e["WATCH_NAMESPACE"] == "calls" and e["SYSCTL_IMAGES"] == "busybox@sha256:" + "a" * 64, e
PY
  must_fail "at '/operator/sysctlImages/0'" --set "operator.sysctlImages={busybox:1.37}"
  render cluster-only --set operator.enabled=false
  pyassert cluster-only <<'PY'
assert "Deployment" not in kinds and "ClusterRole" not in kinds and "RtcdCluster" in kinds, kinds
PY
  # exactly what scripts/operator-e2e.sh applies: the operator's ServiceAccount rtcd-system/rtcd-operator + RBAC
  helm template rtcd "$CHART" --namespace rtcd-system --set fullnameOverride=rtcd \
    --show-only templates/operator/serviceaccount.yaml --show-only templates/operator/rbac.yaml >"$W/e2e-rbac.yaml"
  to_json "$W/e2e-rbac.yaml" >"$W/e2e-rbac.json"
  pyassert e2e-rbac <<'PY'
assert kinds == ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding", "Role", "RoleBinding",
                 "ServiceAccount"], kinds
sa = one("ServiceAccount")
assert (sa["metadata"]["name"], sa["metadata"]["namespace"]) == ("rtcd-operator", "rtcd-system")
rbac_ok("rtcd-system", "rtcd-operator", "")
PY
}
check "helm template, toggles: operator only, cluster only, the RBAC operator-e2e.sh applies" t_toggles


t_typos() {
  must_fail "additional properties 'imagee' not allowed" --set imagee.tag=x
  must_fail "at '/rtcdCluster': additional properties 'replicas' not allowed" --set rtcdCluster.replicas=3
  must_fail "at '/rtcdCluster/spec': additional properties 'sysctl' not allowed" --set rtcdCluster.spec.sysctl.enabled=false
  must_fail "at '/service': additional properties 'tpye' not allowed" --set service.tpye=LoadBalancer
  must_fail "at '/rtcdCluster/spec/media/mode'" --set rtcdCluster.spec.media.mode=Loadbalancer
  must_fail "at '/rtcdCluster/spec/config/rtc': additional properties 'udpport' not allowed" --set rtcdCluster.spec.config.rtc.udpport=9
  must_fail "'BAD-NAME' does not match pattern" --set configuration.environmentVariables.BAD-NAME=1
  must_fail "service.type NodePort has no equivalent" --set service.type=NodePort
  must_fail "ingress.enabled=true needs ingress.host or ingress.hosts" --set ingress.enabled=true
  must_fail "rtcdCluster.name" --set rtcdCluster.name=Calls_1
}
check "typos and bad values fail helm template naming the key" t_typos

t_plugin_client() {
  render pc-existing --set pluginClient.existingSecret=mm-calls --set pluginClient.clientIdKey=id
  pyassert pc-existing <<'PY'
assert one("RtcdCluster")["spec"]["clients"] == [{"secretName": "mm-calls", "clientIdKey": "id", "authKeyKey": "authKey"}]
PY
  # an entry of rtcdCluster.spec.clients for the same Secret wins; the others are joined
  render pc-join --set rtcdCluster.spec.clients[0].secretName=other \
    --set rtcdCluster.spec.clients[1].secretName=mattermost-rtcd-plugin-client --set rtcdCluster.spec.clients[1].authKeyKey=k
  pyassert pc-join <<'PY'
assert one("RtcdCluster")["spec"]["clients"] == [{"secretName": "other"},
    {"secretName": "mattermost-rtcd-plugin-client", "authKeyKey": "k"}], one("RtcdCluster")["spec"]["clients"]
PY
  render pc-off --set pluginClient.enabled=false
  pyassert pc-off <<'PY'
assert "clients" not in one("RtcdCluster")["spec"]
PY
  helm install "$RELEASE" "$CHART" -n "$NS" --dry-run=client --set pluginClient.enabled=false >"$W/notes-pc-off.txt"
  grep -qF "No client for the Calls plugin" "$W/notes-pc-off.txt" || { cat "$W/notes-pc-off.txt"; exit 1; }
  helm install "$RELEASE" "$CHART" -n "$NS" --dry-run=client --set pluginClient.existingSecret=mm-calls >"$W/notes-pc.txt"
  grep -qF "kubectl -n chart-test get secret mm-calls -o go-template='MM_CALLS_RTCD_SERVICE_URL=http://mattermost-rtcd.chart-test.svc:8045" "$W/notes-pc.txt" \
    || { cat "$W/notes-pc.txt"; exit 1; }
  if grep -qF "then kept" "$W/notes-pc.txt"; then cat "$W/notes-pc.txt"; exit 1; fi
  helm install "$RELEASE" "$CHART" -n "$NS" --dry-run=client >"$W/notes-pc-gen.txt"
  grep -qF "Secret mattermost-rtcd-plugin-client (generated by the operator once, then kept)" "$W/notes-pc-gen.txt" \
    || { cat "$W/notes-pc-gen.txt"; exit 1; }
  must_fail "at '/pluginClient/clientId'" --set pluginClient.clientId=a:b
  must_fail "at '/pluginClient': additional properties 'existingsecret' not allowed" --set pluginClient.existingsecret=x
}
check "pluginClient: generated by default, an existing Secret, joined with spec.clients, NOTES, bad values" t_plugin_client

# A fresh rendering of each case against its committed golden (charts/generate.sh writes them).
t_golden() {
  golden_render helm "$CHART" "$1" >"$W/golden-$1.yaml"
  if ! diff -u "$ROOT/charts/tests/golden/$1.yaml" "$W/golden-$1.yaml" >"$W/golden-$1.diff"; then
    head -n 36 "$W/golden-$1.diff"   # check() shows a failure's last 40 lines
    local n; n=$(wc -l <"$W/golden-$1.diff")
    if [ "$n" -gt 36 ]; then echo "... ($n lines in all: charts/generate.sh --check prints them)"; fi
    echo "charts/tests/golden/$1.yaml differs from a fresh render: run charts/generate.sh (and review the diff)"
    exit 1
  fi
}
for c in $GOLDEN_CASES; do check "helm template golden: $c" t_golden "$c"; done

t_generated() { HELM=$TOOLS/helm "$ROOT/charts/generate.sh" --check; }
check "generated files up to date (charts/generate.sh --check)" t_generated

# ------------------------------------------------------------------------------------------------
# A real control plane

T=$(date +%s%N)
if RUN=$("$ROOT/e2e/envtest/up.sh" 2>"$W/up.log" | tail -n1) && [ -f "$RUN/env" ]; then
  # shellcheck disable=SC1090
  . "$RUN/env"
  PASSED=$((PASSED + 1)); echo "PASS [chart: control plane up] ($(( ($(date +%s%N) - T) / 1000000 ))ms)"
else
  FAILED=$((FAILED + 1)); echo "FAIL [chart: control plane up]"; sed 's/^/    /' "$W/up.log"
  RUN=""
fi

if [ -n "$RUN" ]; then
  k() { kubectl --request-timeout=20s "$@"; }
  poll() { # poll SECONDS cmd...: until cmd succeeds (bounded)
    local secs=$1 i; shift
    for ((i = 0; i < secs * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
  }

  t_crd() {
    k apply --server-side -f "$CHART/crds/rtcdclusters.yaml"
    "$ROOT/e2e/lib/crd-established.sh" kubectl rtcdclusters.rtcd-rs.dev --request-timeout=20s
    k create namespace "$NS"
    k create namespace rtcd-system
    k create namespace chart-examples
  }
  check "CRD (chart crds/) applied and established; namespaces" t_crd

  dry() { k apply --dry-run=server -f "$@"; }
  t_dry_renders() {
    local r
    for r in defaults guide upstream full operator-only cluster-only e2e-rbac; do
      echo "== $r"; dry "$W/$r.yaml"
    done
  }
  check "server-side dry-run of every rendering (incl. pre-delete hook Job and helm test Pod)" t_dry_renders

  t_dry_manifests() {
    k apply --server-side --dry-run=server -f "$ROOT/manifests/operator.yaml"
    local f
    for f in "$ROOT"/manifests/examples/*.yaml; do echo "== $f"; dry "$f" -n chart-examples; done
  }
  check "server-side dry-run of manifests/operator.yaml and manifests/examples/*.yaml" t_dry_manifests

  t_cel() {
    helm template "$RELEASE" "$CHART" -n "$NS" --set rtcdCluster.spec.config.apiPort=8443 \
      --show-only templates/rtcdcluster.yaml >"$W/cel.yaml"
    if dry "$W/cel.yaml" >"$W/cel.out" 2>&1; then echo "accepted apiPort == rtc.tcpPort"; exit 1; fi
    grep -F "config.apiPort must differ from config.rtc.tcpPort" "$W/cel.out"
  }
  check "the CRD's CEL rules reject what the values schema cannot see (apiPort == tcpPort)" t_cel

  t_install() {
    k create -f - <<'EOF'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-1
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-1, kubernetes.io/os: linux}
status:
  addresses:
  - {type: InternalIP, address: 198.18.1.1}
  - {type: ExternalIP, address: 203.0.113.1}
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}
  conditions:
  - {type: Ready, status: "True", reason: KubeletReady, message: fake, lastHeartbeatTime: "2026-01-01T00:00:00Z", lastTransitionTime: "2026-01-01T00:00:00Z"}
EOF
    local t; t=$(date +%s%N)
    helm install "$RELEASE" "$CHART" -n "$NS" "${GUIDE[@]}" --wait --timeout 120s
    echo "helm install --wait took $(( ($(date +%s%N) - t) / 1000000 ))ms"
    k -n "$NS" get rtcdcluster "$RELEASE" -o json >"$W/installed.json"
    k -n "$NS" get deployment "$RELEASE-operator" -o json >>"$W/installed.json"
    k get clusterrole "$RELEASE-operator" -o json >>"$W/installed.json"
    k get clusterrolebinding "$RELEASE-operator" -o json >>"$W/installed.json"
    k -n "$NS" get ingress "$RELEASE" -o json >>"$W/installed.json"
    k -n "$NS" get serviceaccount "$RELEASE-operator" -o json >>"$W/installed.json"
    pyassert installed <<'PY'
r = one("RtcdCluster")
s = r["spec"]
# the CRD's defaults filled in what the chart left out
assert s["config"]["apiPort"] == 8045 and s["media"]["mode"] == "HostNetwork" and s["sysctls"]["enabled"], s
assert {"name": "RTCD_RTC_ICEHOSTOVERRIDE", "value": "rtcd.example.com"} in s["config"]["extraEnv"]
d = one("Deployment")
assert d["status"].get("availableReplicas") == 1, d["status"]
assert one("Ingress")["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"]["number"] == 8045
PY
    k -n "$NS" get pods -l app.kubernetes.io/component=operator -o wide
    # The NOTES' command for Mattermost's settings, run as printed, on the plugin client's Secret
    # (created here as the operator would: kwok runs no operator).
    k -n "$NS" create secret generic "$RELEASE-plugin-client" --from-literal=clientID=mattermost \
      --from-literal=authKey=0123456789abcdef0123456789abcdef0123456
    helm get notes "$RELEASE" -n "$NS" >"$W/notes-installed.txt"
    local cmd; cmd=$(grep -E "^  kubectl -n $NS get secret $RELEASE-plugin-client -o go-template=" "$W/notes-installed.txt")
    bash -c "$cmd" >"$W/mm-env.txt"
    printf '%s\n' "MM_CALLS_RTCD_SERVICE_URL=http://$RELEASE.$NS.svc:8045" "MM_CALLS_RTCD_CLIENT_ID=mattermost" \
      "MM_CALLS_RTCD_AUTH_KEY=0123456789abcdef0123456789abcdef0123456" | diff -u - "$W/mm-env.txt"
  }
  check "helm install --wait (guide's values): RtcdCluster, operator Deployment Ready, ClusterRole, Ingress, NOTES' Mattermost settings" t_install

  t_helm_test_pod() {
    helm get hooks "$RELEASE" -n "$NS" >"$W/hooks.yaml"
    grep -q 'helm.sh/hook: test' "$W/hooks.yaml"
    helm template "$RELEASE" "$CHART" -n "$NS" "${GUIDE[@]}" --show-only templates/tests/test-api.yaml >"$W/test-pod.yaml"
    dry "$W/test-pod.yaml"
    echo "note: 'helm test' itself needs a real rtcd behind Service $RELEASE (kwok runs no containers)"
  }
  check "helm test pod: stored with the release, server dry-run (not run: no kubelet)" t_helm_test_pod

  # Plays the kubelet (and the operator) for the pre-delete hook; results in $W/hook.*
  hook_kubelet() {
    local job=$RELEASE-cleanup pod="" i args token kpid ts
    for ((i = 0; i < 600; i++)); do
      pod=$(k -n "$NS" get pods -l "batch.kubernetes.io/job-name=$job" \
        -o jsonpath='{range .items[?(@.status.phase=="Running")]}{.metadata.name}{end}' 2>/dev/null || true)
      [ -n "$pod" ] && break
      sleep 0.1
    done
    [ -n "$pod" ] || { echo "no Running pod of Job $job" >"$W/hook.err"; return 1; }
    args=$(k -n "$NS" get job "$job" -o jsonpath='{.spec.template.spec.containers[0].args}')
    mapfile -t ARGS < <(python3 -c 'import json, sys; print("\n".join(json.loads(sys.argv[1])))' "$args")
    echo "hook pod $pod runs: kubectl ${ARGS[*]}" >"$W/hook.log"
    token=$(k -n "$NS" create token "$job" --duration=10m)
    # The Job's own command, with the hook ServiceAccount's token (so its Role is tested too); its
    # wait capped at 60 s here (a later --timeout wins).
    kubectl --token="$token" "${ARGS[@]}" --timeout=60s >>"$W/hook.log" 2>&1 &
    kpid=$!
    ts=""
    for ((i = 0; i < 300; i++)); do
      ts=$(k -n "$NS" get rtcdcluster "$RELEASE" -o jsonpath='{.metadata.deletionTimestamp}' 2>/dev/null || true)
      [ -n "$ts" ] && break
      sleep 0.1
    done
    echo "deletionTimestamp=$ts" >>"$W/hook.log"
    # While the RtcdCluster drains, its operator must still be there.
    if k -n "$NS" get deployment "$RELEASE-operator" -o name >>"$W/hook.log" 2>&1; then
      echo present >"$W/hook.operator"
    else
      echo missing >"$W/hook.operator"
    fi
    sleep 1   # a real drain takes a while; Helm must keep waiting
    k -n "$NS" patch rtcdcluster "$RELEASE" --type=merge -p '{"metadata":{"finalizers":null}}' >>"$W/hook.log" 2>&1
    local rc=0
    wait "$kpid" || rc=$?
    echo "$rc" >"$W/hook.rc"
    local now; now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    local phase=Succeeded; [ "$rc" = 0 ] || phase=Failed
    k -n "$NS" patch pod "$pod" --subresource=status --type=merge -p "{\"status\":{\"phase\":\"$phase\",
      \"conditions\":[{\"type\":\"Ready\",\"status\":\"False\",\"reason\":\"PodCompleted\",\"lastTransitionTime\":\"$now\"}],
      \"containerStatuses\":[{\"name\":\"kubectl\",\"image\":\"x\",\"imageID\":\"\",\"ready\":false,\"restartCount\":0,
      \"state\":{\"terminated\":{\"exitCode\":$rc,\"reason\":\"Completed\",\"startedAt\":\"$now\",\"finishedAt\":\"$now\"}}}]}}" \
      >>"$W/hook.log" 2>&1
  }

  t_uninstall() {
    # Be the operator: it puts its finalizer on every RtcdCluster.
    k -n "$NS" patch rtcdcluster "$RELEASE" --type=merge -p '{"metadata":{"finalizers":["rtcd-rs.dev/drain"]}}'
    hook_kubelet &
    BG_PID=$!
    trap 'kill "$BG_PID" 2>/dev/null || true' EXIT   # by PID; this check runs in its own subshell
    local t rc=0; t=$(date +%s%N)
    helm uninstall "$RELEASE" -n "$NS" --wait --timeout 120s || rc=$?
    echo "helm uninstall took $(( ($(date +%s%N) - t) / 1000000 ))ms (rc $rc)"
    wait "$BG_PID" || true
    cat "$W/hook.log" "$W/hook.err" 2>/dev/null || true
    [ "$rc" = 0 ]
    [ "$(cat "$W/hook.rc")" = 0 ] || { echo "the hook's kubectl failed"; exit 1; }
    [ "$(cat "$W/hook.operator")" = present ] || { echo "operator was gone while the RtcdCluster drained"; exit 1; }
    local left
    left=$(k get -n "$NS" rtcdclusters,deployments,ingresses,serviceaccounts,roles,rolebindings,jobs \
      -l app.kubernetes.io/instance="$RELEASE" -o name)
    left+=$(k get clusterroles,clusterrolebindings -l app.kubernetes.io/instance="$RELEASE" -o name)
    [ -z "$left" ] || { echo "left after uninstall: $left"; exit 1; }
    poll 30 bash -c "[ -z \"\$(kubectl -n $NS get pods -o name)\" ]" || { k -n "$NS" get pods; exit 1; }
    k get crd rtcdclusters.rtcd-rs.dev -o name   # Helm keeps crds/
  }
  check "helm uninstall: pre-delete hook drains the RtcdCluster while the operator runs, then all is gone but the CRD" t_uninstall
fi

TOTAL_MS=$(( ($(date +%s%N) - T0) / 1000000 ))
echo "chart-test: $PASSED passed, $FAILED failed in $((TOTAL_MS / 1000)).$(( (TOTAL_MS % 1000) / 100 ))s"
[ "$FAILED" = 0 ]
