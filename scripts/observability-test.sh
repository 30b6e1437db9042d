#!/usr/bin/env bash
# Dashboard and alerts (issue 17): the chart's Grafana dashboard and Prometheus rules against a
# real rtcd-rs and a real Prometheus (Debian's 2.42, e2e/observability/tools.sh).
#   1. promtool check rules and promtool test rules (charts/tests/rules.test.yaml: each alert
#      fires on its trouble, after its `for`, and not on a healthy instance);
#   2. the dashboard JSON loads and is well formed (unique panel IDs, every panel with queries
#      on the ${datasource} variable, 23225's variables $rtcd and $rtcd_metrics_port);
#   3. inside the test's own network namespace: rtcd (limits.max_sessions set), Prometheus
#      scraping it every second with the rules loaded, and a call of three (one talking, a
#      screen share, one participant over ICE-TCP) from rtcd-loadtest. During the call every
#      dashboard query is evaluated by Prometheus: none fails, every panel returns series, and
#      sessions, tracks and bandwidth read what the call does; every rule evaluates healthy;
#   4. after the call, every series any panel, any rule or 23225's rtcd panels name is in the
#      scrape (23225's go_* series map to the rtcd-rs series our panels show instead);
#   5. helm template: the dashboard ConfigMap carries the sidecar label and the JSON file byte
#      for byte, the PrometheusRule carries the rule file's groups, only on a cluster serving
#      monitoring.coreos.com/v1 PrometheusRule, and neither renders by default.
# Prints "PASS [observability: …]" / "FAIL [observability: …]".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}
RULES=$ROOT/charts/mattermost-rtcd/rules/rtcd.rules.yaml
DASH=$ROOT/charts/mattermost-rtcd/dashboards/rtcd.json

if [ "${OBS_INNER:-}" != 1 ]; then
  cargo build --locked -q -p rtcd -p rtcd-loadtest --features rtcd/fault-injection
  PROM=$("$ROOT/e2e/observability/tools.sh")
  # shellcheck disable=SC1091
  . "$ROOT/e2e/envtest/versions.env"
  TOOLS=${ENVTEST_TOOLS:-$HOME/.cache/rtcd-rs/tools}/${KUBECTL_WHEEL//==/-}/bin
  if [ ! -x "$TOOLS/helm" ]; then "$ROOT/e2e/envtest/build.sh" >/dev/null; fi
  exec env OBS_INNER=1 PROM="$PROM" HELM="$TOOLS/helm" unshare -n "$0" "$@"
fi

fails=0
pass() { echo "PASS [observability: $1]"; }
fail() { echo "FAIL [observability: $1]"; fails=$((fails + 1)); }
DIR=$(mktemp -d /tmp/observability.XXXXXX)
SERVER="" PROMPID="" LTPID=""
trap 'kill $LTPID $PROMPID $SERVER 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$DIR"' EXIT

# 1. The rules.
if "$PROM/promtool" check rules "$RULES" >"$DIR/check.txt" 2>&1; then
  pass "promtool check rules: $(grep -o '[0-9]* rules found' "$DIR/check.txt")"
else
  cat "$DIR/check.txt"; fail "promtool check rules"
fi
if (cd "$ROOT/charts/tests" && "$PROM/promtool" test rules rules.test.yaml) >"$DIR/test.txt" 2>&1; then
  pass "promtool test rules: every alert fires on its trouble and stays quiet otherwise ($(grep -c 'alertname:' "$ROOT/charts/tests/rules.test.yaml") checks)"
else
  cat "$DIR/test.txt"; fail "promtool test rules"
fi

# 2. The dashboard's shape; its queries, with the variables as Grafana substitutes them.
if python3 - "$DASH" "$DIR/queries.json" <<'EOF'; then
import json, sys
d = json.load(open(sys.argv[1]))
names = [v["name"] for v in d["templating"]["list"]]
assert names == ["datasource", "rtcd", "rtcd_metrics_port"], names
ids = [p["id"] for p in d["panels"]]
assert len(ids) == len(set(ids)), "duplicate panel ids"
queries = []
for p in d["panels"]:
    if p["type"] == "row":
        continue
    assert p["datasource"]["uid"] == "${datasource}", p["title"]
    assert p["targets"], p["title"]
    for t in p["targets"]:
        assert t["datasource"]["uid"] == "${datasource}", p["title"]
        e = (t["expr"].replace("$__rate_interval", "15s").replace("$rtcd_metrics_port", "8045")
             .replace("$rtcd", "127.0.0.1"))
        assert "$" not in e, e
        queries.append({"panel": p["title"], "expr": e})
json.dump(queries, open(sys.argv[2], "w"))
print(f"{len(d['panels'])} panels, {len(queries)} queries")
EOF
  pass "the dashboard JSON loads: rows, panels with queries on \${datasource}, 23225's variables"
else
  fail "the dashboard JSON is malformed"
fi

# 3. rtcd, Prometheus and a call.
ip link set lo up
RTCD=$CARGO_TARGET_DIR/debug/rtcd
LT=$CARGO_TARGET_DIR/debug/rtcd-loadtest
env -i PATH=/usr/bin:/bin RTCD_API_HTTP_LISTENADDRESS=127.0.0.1:8045 RTCD_API_SECURITY_ALLOWSELFREGISTRATION=true \
  RTCD_RTC_ICEPORTUDP=8443 RTCD_RTC_ICEPORTTCP=8443 RTCD_STORE_DATASOURCE="$DIR/store" RTCD_LIMITS_MAXSESSIONS=50 \
  RTCD_LOGGER_ENABLEFILE=false RTCD_LOGGER_CONSOLELEVEL=WARN RTCD_RTC_ENGINESHARDS=2 \
  "$RTCD" >"$DIR/server.log" 2>&1 &
SERVER=$!
# shellcheck disable=SC1091
. "$ROOT/e2e/lib/wait-version.sh"
wait_for_version 8045 "$SERVER" || { cat "$DIR/server.log"; fail "rtcd did not start"; exit 1; }
cat >"$DIR/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$RULES"]
scrape_configs:
  - job_name: rtcd
    static_configs: [{targets: ["127.0.0.1:8045"]}]
EOF
"$PROM/prometheus" --config.file="$DIR/prometheus.yml" --storage.tsdb.path="$DIR/tsdb" \
  --web.listen-address=127.0.0.1:9090 >"$DIR/prometheus.log" 2>&1 &
PROMPID=$!
"$LT" --url http://127.0.0.1:8045 --calls 1 --users-per-call 3 --unmuted 1 --screen --tcp-share 0.34 \
  --duration 14 --warmup 1 --json "$DIR/report.json" >"$DIR/lt.txt" 2>"$DIR/lt.err" &
LTPID=$!
# In the call's window (joins take ~2 s, then 1 s warm-up): 9 s in, with 15 s rate windows.
sleep 10
if python3 - "$DIR/queries.json" "$RULES" <<'EOF'; then
import json, sys, urllib.parse, urllib.request
def query(e):
    url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": e})
    return json.load(urllib.request.urlopen(url, timeout=5))
bad = 0
def check(ok, what):
    global bad
    print(("PASS" if ok else "FAIL") + f" [observability: {what}]")
    bad += 0 if ok else 1
panels = {}
for q in json.load(open(sys.argv[1])):
    r = query(q["expr"])
    ok = r.get("status") == "success"
    if not ok:
        print(f"  {q['panel']}: {q['expr']}: {r}")
    panels.setdefault(q["panel"], []).append((ok, len(r.get("data", {}).get("result", []))))
failed = [p for p, rs in panels.items() if not all(ok for ok, _ in rs)]
check(not failed, f"Prometheus evaluates all {sum(len(v) for v in panels.values())} dashboard queries (failed: {failed})")
# Panels that may be empty on a healthy call: no RTC error happened; and the operator's canary
# panels (the operator is not scraped here: its envtest asserts those series in its own scrape).
may_be_empty = {"RTC errors", "Connectivity canary", "Canary round trip and connect time"}
empty = [p for p, rs in panels.items() if p not in may_be_empty and sum(n for _, n in rs) == 0]
check(not empty, f"every panel of a call returns series (empty: {empty})")
def value(e):
    res = query(e)["data"]["result"]
    return float(res[0]["value"][1]) if res else None
checks = {
    "sum(rtcd_rtc_sessions_total)": lambda v: v == 3,
    'sum(rtcd_rtc_rtp_tracks_total{direction="out"})': lambda v: v >= 4,
    "rtcd_rtc_forwarded_tracks": lambda v: v >= 4,
    'sum(rate(rtcd_net_bytes_total{direction="out"}[15s])) * 8': lambda v: v > 50_000,
    'sum(rate(rtcd_net_bytes_total{transport="tcp"}[15s]))': lambda v: v > 0,
    'rtcd_limit_usage_ratio{limit="max_sessions"}': lambda v: abs(v - 3 / 50) < 1e-9,
    "rtcd_load_ratio": lambda v: v >= 3 / 50,
    "rtcd_engine_healthy": lambda v: v == 1,
    "sum(rtcd_rtc_first_packet_time_count)": lambda v: v >= 2,
}
for e, ok in checks.items():
    v = value(e)
    check(v is not None and ok(v), f"{e} reads the call: {v}")
rules = json.load(urllib.request.urlopen("http://127.0.0.1:9090/api/v1/rules", timeout=5))
rs = [r for g in rules["data"]["groups"] for r in g["rules"]]
unhealthy = [(r["name"], r.get("lastError")) for r in rs if r.get("health") != "ok"]
alerts = sum(1 for l in open(sys.argv[2]) if l.strip().startswith("- alert:"))
check(len(rs) == alerts and not unhealthy, f"Prometheus loaded the {len(rs)} rules and evaluates them healthy ({unhealthy})")
firing = [r["name"] for r in rs if r.get("state") == "firing"]
check(not firing, f"no alert fires on a healthy call ({firing})")
sys.exit(1 if bad else 0)
EOF
  :
else
  fails=$((fails + 1))
fi
if wait "$LTPID"; then
  pass "the call completed ($(head -1 "$DIR/lt.txt"))"
else
  cat "$DIR/lt.err"; fail "rtcd-loadtest exited non-zero"
fi
LTPID=""

# 4. Every series named anywhere is in the scrape.
python3 - <<'EOF' >"$DIR/metrics.txt"
import urllib.request
print(urllib.request.urlopen("http://127.0.0.1:8045/metrics", timeout=5).read().decode())
EOF
if python3 - "$DIR/metrics.txt" "$DASH" "$RULES" "$ROOT/e2e/observability/grafana-23225.txt" <<'EOF'; then
import json, re, sys
scrape = open(sys.argv[1]).read()
have = set()
for m in re.finditer(r"^# TYPE (\S+) (\S+)", scrape, re.M):
    name, kind = m.groups()
    have |= {"counter": {name + "_total"}, "histogram": {name + s for s in ("_bucket", "_sum", "_count")}}.get(kind, {name})
have |= {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", scrape, re.M)}
def names(expr):
    # Series names; not Grafana variables such as $rtcd_metrics_port.
    return set(re.findall(r"(?<![$\w])(rtcd_[a-z0-9_]+)\b", expr))
dash = json.load(open(sys.argv[2]))
wanted = {}
for p in dash["panels"]:
    for t in p.get("targets", []):
        for n in names(t["expr"]):
            wanted.setdefault(n, set()).add("panel " + p["title"])
for n in names(open(sys.argv[3]).read()):
    wanted.setdefault(n, set()).add("rules")
for line in open(sys.argv[4]):
    line = line.strip()
    if not line or line.startswith("#"):
        continue
    if "->" in line:
        go, ours = (x.strip() for x in line.split("->"))
        wanted.setdefault(ours, set()).add(f"23225 {go} (equivalent)")
        assert go not in have, f"{go} is exported: never fake go_* series"
    else:
        wanted.setdefault(line.split()[0], set()).add("23225")
# The operator's series come from the operator, not rtcd: the operator's envtest
# (operator/tests/envtest.rs, fleet_lifecycle) asserts them in a real scrape of the operator.
root = sys.argv[2].rsplit("/charts/", 1)[0]
registered = open(f"{root}/operator/src/metrics.rs").read()
envtest = open(f"{root}/operator/tests/envtest.rs").read()
for n in [n for n in wanted if n.startswith("rtcd_operator_")]:
    short = n[len("rtcd_operator_"):]
    if f'"{short}"' in registered and n in envtest:
        have.add(n)
missing = {n: sorted(w) for n, w in wanted.items() if n not in have}
print(f"{len(wanted)} series named by the dashboard, the rules and 23225; missing from the scrape: {missing}")
sys.exit(1 if missing else 0)
EOF
  pass "every series the dashboard, the rules and 23225's rtcd panels name is in the scrape after a call"
else
  fail "a series named by the dashboard, the rules or 23225 is missing from the scrape"
fi
grep -q '^go_' "$DIR/metrics.txt" && fail "go_* series exported" || pass "no go_* series is exported (the honest equivalents are rtcd_ names)"

# 5. The chart renders them.
export HELM_CONFIG_HOME=$DIR/helm/config HELM_CACHE_HOME=$DIR/helm/cache HELM_DATA_HOME=$DIR/helm/data
CHART=$ROOT/charts/mattermost-rtcd
"$HELM" template r "$CHART" --namespace obs --set monitoring.dashboard.enabled=true \
  --api-versions monitoring.coreos.com/v1/PrometheusRule >"$DIR/on.yaml"
"$HELM" template r "$CHART" --namespace obs >"$DIR/off.yaml"
"$HELM" template r "$CHART" --namespace obs --set monitoring.dashboard.enabled=true >"$DIR/nocrd.yaml"
if python3 - "$DIR" "$DASH" "$RULES" <<'EOF'; then
import json, sys
d, dash, rules = sys.argv[1:]
def docs(f):
    # helm's output: documents separated by "---"; find kinds with a tiny reader (no PyYAML).
    return [x for x in open(f).read().split("\n---\n")]
def find(f, kind):
    return [x for x in docs(f) if f"\nkind: {kind}\n" in "\n" + x]
on = find(f"{d}/on.yaml", "ConfigMap")
cm = [x for x in on if "-dashboard\n" in x]
assert len(cm) == 1, "one dashboard ConfigMap"
cm = cm[0]
assert '    grafana_dashboard: "1"\n' in cm, "the sidecar label"
body = cm.split("  rtcd-rs.json: |-\n", 1)[1]
lines = [l[4:] for l in body.splitlines()]
assert "\n".join(lines) == open(dash).read().strip(), "the ConfigMap carries the dashboard file byte for byte"
pr = find(f"{d}/on.yaml", "PrometheusRule")
assert len(pr) == 1, "a PrometheusRule when the API serves it"
for alert in ("RtcdNoPluginConnection", "RtcdEngineUnhealthy", "RtcdIceTcpShareHigh"):
    assert f"alert: {alert}" in pr[0], alert
assert not find(f"{d}/nocrd.yaml", "PrometheusRule"), "no PrometheusRule without its CRD"
off = open(f"{d}/off.yaml").read()
assert "kind: PrometheusRule" not in off and "-dashboard\n" not in off, "nothing by default"
print("dashboard ConfigMap and PrometheusRule render as configured")
EOF
  pass "helm: the dashboard ConfigMap (sidecar label, the JSON byte for byte) and the PrometheusRule (only with its CRD)"
else
  fail "helm: the monitoring resources do not render as configured"
fi

echo "observability: $fails failure(s)"
[ "$fails" = 0 ]
