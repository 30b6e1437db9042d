#!/usr/bin/env bash
# Mode (b) of the cluster-agnostic end-to-end suite (e2e/cluster, package rtcd-e2e): the same suite
# as mode (a) (scripts/cluster-e2e.sh), on a kind cluster, in users' CI (.github/workflows/e2e.yaml)
# or on a Linux machine with Docker, kind v0.32, kubectl, helm 4 and cargo. This project has no
# Docker engine and has NOT run this script. See e2e/kind/README.md.
#   e2e/kind/run.sh            create the cluster if missing, build and load both images, run the
#                              suite, then `helm install --wait` + `helm test` + uninstall
#   e2e/kind/run.sh teardown   delete the cluster
# Env: KIND_CLUSTER (rtcd-e2e); E2E_ARTIFACTS (target/e2e-kind/artifacts, relative to the repo),
# filled on failure.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
CLUSTER=${KIND_CLUSTER:-rtcd-e2e}
ART=${E2E_ARTIFACTS:-target/e2e-kind/artifacts}
# The cluster's own kubeconfig: ~/.kube/config is left alone.
export KUBECONFIG=$ROOT/target/e2e-kind/kubeconfig

case "${1:-}" in
  "") ;;
  teardown) exec kind delete cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG" ;;
  *) echo "usage: $0 [teardown]" >&2; exit 2 ;;
esac

NS=rtcd-e2e
collect() {
  local rc=$?
  [ "$rc" -eq 0 ] && return
  set +e
  echo "run.sh: failed; collecting logs into $ART" >&2
  mkdir -p "$ART"
  kubectl get all -A -o wide >"$ART/get-all.txt" 2>&1
  kubectl get nodes -o wide --show-labels >"$ART/nodes.txt" 2>&1
  kubectl get rtcdclusters -A -o yaml >"$ART/rtcdclusters.yaml" 2>&1
  kubectl get events -A --sort-by=.lastTimestamp >"$ART/events.txt" 2>&1
  kubectl logs -n "$NS" -l app.kubernetes.io/component=operator --all-containers --prefix --tail=-1 \
    >"$ART/operator.log" 2>&1
  kubectl logs -n "$NS" -l rtcd-rs.dev/cluster --all-containers --prefix --tail=-1 >"$ART/rtcd.log" 2>&1
  kind export logs --name "$CLUSTER" "$ART/kind" >/dev/null 2>&1
  return "$rc"
}
trap collect EXIT

for c in docker kind kubectl helm cargo; do
  command -v "$c" >/dev/null || { echo "run.sh: $c not found in PATH" >&2; exit 1; }
done

# The cluster (reused if it exists) and the locally built images on every node.
mkdir -p "$(dirname "$KUBECONFIG")"
if ! kind get clusters | grep -x "$CLUSTER" >/dev/null; then
  kind create cluster --name "$CLUSTER" --config e2e/kind/cluster.yaml --kubeconfig "$KUBECONFIG" --wait 180s
fi
kind export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG"
kubectl get nodes -o wide --show-labels
docker build -f Dockerfile.rtcd -t rtcd-rs/rtcd:e2e .
docker build -f Dockerfile.operator -t rtcd-rs/rtcd-operator:e2e .
kind load docker-image --name "$CLUSTER" rtcd-rs/rtcd:e2e rtcd-rs/rtcd-operator:e2e

# The suite, with mode (a)'s variables. Mode (a) turns off the chart's operator Deployment and
# cleanup hook and brings its own admin Secret; here the chart installs both and the operator
# generates the Secret, so E2E_SET only points both images at the loaded :e2e tags (pullPolicy
# Never: they exist only on the nodes).
# rtcdCluster.spec.sysctls.enabled=false is not needed: the sysctl init container reports and
# skips keys the kernel refuses (a kind node's network namespace lacks net.core.rmem_max/wmem_max),
# and it keeps the default pull policy of its own image (busybox), not the rtcd image's Never.
export E2E_NAMESPACE=$NS E2E_NODE_LABEL=rtcd-rs.dev/e2e-pool E2E_HELM=helm
E2E_SET="image.repository=rtcd-rs/rtcd,image.tag=e2e,image.pullPolicy=Never"
E2E_SET+=",operator.image.repository=rtcd-rs/rtcd-operator,operator.image.tag=e2e,operator.image.pullPolicy=Never"
export E2E_SET
cargo test --locked -p rtcd-e2e --test cluster -- --ignored --nocapture --test-threads=1

# The suite uninstalls its release at the end. Install it again with the suite's values for
# `helm test` (health and version through the API Service). One change: the suite's nodeSelector
# (its e2e-member label, removed by then) becomes the pool label both workers keep.
helm install rtcd-e2e charts/mattermost-rtcd --namespace "$NS" --create-namespace --wait --timeout 5m \
  --set rtcdCluster.name=e2e --set 'rtcdCluster.spec.nodeSelector.rtcd-rs\.dev/e2e-pool=true' \
  --set rtcdCluster.spec.config.allowSelfRegistration=true --set "$E2E_SET"
# helm's --wait covers the operator Deployment, not the RtcdCluster: wait for its Ready like the suite.
kubectl -n "$NS" wait rtcdcluster/e2e --for=condition=Ready --timeout=300s
helm test rtcd-e2e --namespace "$NS" --logs --timeout 5m
helm uninstall rtcd-e2e --namespace "$NS" --wait --timeout 5m
echo "run.sh: passed"
