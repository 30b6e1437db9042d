#!/usr/bin/env bash
# Regenerates what is derived from crds/ and the chart, deterministically:
#   charts/mattermost-rtcd/crds/rtcdclusters.yaml   byte copy of crds/rtcdclusters.yaml
#   charts/mattermost-rtcd/dashboards/rtcd.json     scripts/gen-dashboard.py (the Grafana dashboard)
#   charts/mattermost-rtcd/values.schema.json       charts/values.schema.base.json + the CRD's spec
#                                                   schema (closed objects) as rtcdCluster.spec
#   manifests/operator.yaml                         the operator for kubectl users (helm template)
#   manifests/examples/<name>.yaml                  an RtcdCluster per charts/examples/<name>.yaml
#   charts/tests/golden/<case>.yaml                 full `helm template` of the chart per case of
#                                                   charts/tests/golden.sh (default, guide, upstream)
#
#   charts/generate.sh            rewrite them
#   charts/generate.sh --check    exit 1 (with a diff) if any of them is stale; writes nothing
#
# Uses the pinned helm from e2e/envtest/build.sh ($HELM overrides), python3 (stdlib only).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CHECK=0
case "${1:-}" in
  --check) CHECK=1 ;;
  "") ;;
  *) echo "usage: charts/generate.sh [--check]" >&2; exit 2 ;;
esac

if [ -z "${HELM:-}" ]; then
  # shellcheck disable=SC1091
  . "$ROOT/e2e/envtest/versions.env"
  TOOLS=${ENVTEST_TOOLS:-$HOME/.cache/rtcd-rs/tools}/${KUBECTL_WHEEL//==/-}/bin
  if [ ! -x "$TOOLS/helm" ]; then "$ROOT/e2e/envtest/build.sh" >/dev/null; fi
  HELM=$TOOLS/helm
fi
[ -x "$HELM" ] || { echo "generate: no helm at $HELM" >&2; exit 1; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/rtcd-chart-gen.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
# Helm keeps no state for `helm template` of a local chart, but keep it away from $HOME anyway.
export HELM_CONFIG_HOME=$TMP/helm/config HELM_CACHE_HOME=$TMP/helm/cache HELM_DATA_HOME=$TMP/helm/data

OUT=$TMP/out
CHART=$OUT/charts/mattermost-rtcd
mkdir -p "$OUT/charts/tests/golden" "$OUT/manifests/examples"
cp -R "$ROOT/charts/mattermost-rtcd" "$CHART"

# 0. The Grafana dashboard.
python3 "$ROOT/scripts/gen-dashboard.py" "$CHART/dashboards/rtcd.json"

# 1. The CRD, byte for byte.
cp "$ROOT/crds/rtcdclusters.yaml" "$CHART/crds/rtcdclusters.yaml"

# 2. values.schema.json. YAML -> JSON through helm's own parser (fromYaml | toJson: sorted keys).
CONV=$TMP/yaml2json
mkdir -p "$CONV/templates"
printf 'apiVersion: v2\nname: yaml2json\nversion: 0.0.0\n' >"$CONV/Chart.yaml"
cp "$ROOT/crds/rtcdclusters.yaml" "$CONV/crd.yaml"
printf '%s\n' '{{ .Files.Get "crd.yaml" | fromYaml | toJson }}' >"$CONV/templates/crd.json"
"$HELM" template x "$CONV" --show-only templates/crd.json | sed -n '/^{/,$p' >"$TMP/crd.json"
python3 - "$TMP/crd.json" "$ROOT/charts/values.schema.base.json" "$CHART/values.schema.json" <<'PY'
import json, sys
crd = json.load(open(sys.argv[1]))
assert "Error" not in crd, crd
versions = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
spec = versions[0]["schema"]["openAPIV3Schema"]["properties"]["spec"]

# Maps of strings that the chart stringifies, so --set a.b=true or =123 is accepted there.
STRMAPS = {("nodeSelector",), ("api", "annotations"), ("media", "loadBalancer", "annotations"),
           ("serviceMonitor", "labels"), ("sysctls", "values"), ("iceHostOverride", "static")}
EXTRA = {("config", "extraEnv", "[]", "name"): {"pattern": "^[A-Za-z_][A-Za-z0-9_]*$"}}
DROP = {"description", "default", "format", "nullable"}

def conv(node, path):
    if node.get("x-kubernetes-int-or-string"):
        alts = [{"type": "integer"}, {"type": "string"}] + ([{"type": "null"}] if node.get("nullable") else [])
        return {"anyOf": alts}
    out = {}
    for k, v in node.items():
        if k in DROP or k.startswith("x-kubernetes-"):
            continue
        if k == "properties":
            out[k] = {p: conv(s, path + (p,)) for p, s in v.items()}
        elif k == "items":
            out[k] = conv(v, path + ("[]",))
        elif k == "additionalProperties" and isinstance(v, dict):
            out[k] = conv(v, path + ("{}",))
        else:
            out[k] = v
    if node.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if "properties" in out and "additionalProperties" not in out:
        out["additionalProperties"] = False   # a misspelt field fails helm install/template
    if path in STRMAPS:
        out["additionalProperties"] = {"type": ["string", "number", "boolean"]}
    out.update(EXTRA.get(path, {}))
    return out

schema = json.load(open(sys.argv[2]))
rc = schema["properties"]["rtcdCluster"]["properties"]
assert rc["spec"] == "@CRD_SPEC@"
rc["spec"] = conv(spec, ())
rc["spec"]["description"] = "RtcdCluster spec (crds/rtcdclusters.yaml); wins over the upstream-style keys."
with open(sys.argv[3], "w") as f:
    json.dump(schema, f, indent=2)
    f.write("\n")
PY

# 3. manifests/: helm template, without Helm's bookkeeping labels.
unhelm() { grep -Ev '^ *(helm\.sh/chart: |app\.kubernetes\.io/managed-by: Helm$|# Source: )'; }
{
  cat <<'EOF'
# GENERATED by charts/generate.sh (helm template of charts/mattermost-rtcd, operator only); do not edit.
# rtcd-operator for kubectl users: the RtcdCluster CRD, namespace rtcd-system, ServiceAccount,
# ClusterRole/Binding (exactly the verbs the operator uses) and the Deployment.
#   kubectl apply --server-side -f manifests/operator.yaml
# Then create an RtcdCluster in any namespace: see manifests/examples/.
---
apiVersion: v1
kind: Namespace
metadata:
  name: rtcd-system
  labels:
    app.kubernetes.io/part-of: rtcd-rs
EOF
  "$HELM" template rtcd "$CHART" --namespace rtcd-system --include-crds --no-hooks \
    --set fullnameOverride=rtcd --set rtcdCluster.enabled=false | unhelm
} >"$OUT/manifests/operator.yaml"

for values in "$ROOT"/charts/examples/*.yaml; do
  name=$(basename "$values")
  {
    echo "# GENERATED by charts/generate.sh from charts/examples/$name; do not edit."
    sed -n '/^#/!q; p' "$values"
    # The RtcdCluster alone, without namespace (kubectl apply -n) or Helm's labels.
    "$HELM" template rtcd "$CHART" --namespace default -f "$values" --show-only templates/rtcdcluster.yaml \
      | unhelm | awk '
          /^metadata:/ { meta = 1; print; next }
          meta && /^  namespace: / { next }
          meta && /^  labels:/ { skip = 1; next }
          skip && /^    / { next }
          { skip = 0 }
          /^[^ ]/ { meta = 0 }
          { print }'
  } >"$OUT/manifests/examples/$name"
done

# 4. Golden renderings, with the invocation scripts/chart-test.sh uses (charts/tests/golden.sh).
# shellcheck source=charts/tests/golden.sh
. "$ROOT/charts/tests/golden.sh"
for c in $GOLDEN_CASES; do
  golden_render "$HELM" "$CHART" "$c" >"$OUT/charts/tests/golden/$c.yaml"
done

# 5. Write, or compare.
FILES="charts/mattermost-rtcd/crds/rtcdclusters.yaml charts/mattermost-rtcd/values.schema.json charts/mattermost-rtcd/dashboards/rtcd.json"
if [ "$CHECK" = 1 ]; then
  rc=0
  for f in $FILES; do
    diff -u "$ROOT/$f" "$OUT/$f" >&2 || rc=1
  done
  diff -ru "$ROOT/manifests" "$OUT/manifests" >&2 || rc=1
  diff -ru "$ROOT/charts/tests/golden" "$OUT/charts/tests/golden" >&2 || rc=1
  if [ "$rc" != 0 ]; then
    echo "generate: charts/ or manifests/ is stale: run charts/generate.sh and commit the result" >&2
    exit 1
  fi
  echo "generate: up to date"
else
  for f in $FILES; do cp "$OUT/$f" "$ROOT/$f"; done
  rm -rf "$ROOT/manifests"
  cp -R "$OUT/manifests" "$ROOT/manifests"
  rm -rf "$ROOT/charts/tests/golden"
  cp -R "$OUT/charts/tests/golden" "$ROOT/charts/tests/golden"
  echo "generate: wrote $FILES manifests/ charts/tests/golden/"
fi
