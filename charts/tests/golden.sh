# shellcheck shell=bash
# Sourced by charts/generate.sh (writes/checks charts/tests/golden/<case>.yaml) and
# scripts/chart-test.sh (asserts on the same renderings and compares them with the goldens), so
# both run exactly the same `helm template`:
#   helm template mattermost-rtcd <chart> --namespace chart-test --kube-version $K8S_VERSION <case args>
# Fixed release, namespace and Kubernetes version (no cluster: `helm template` does no lookups),
# so the output is deterministic. Cases:
#   default    the chart's default values
#   guide      the --set command of Mattermost's set-up guide (Calls "rtcd setup and configuration")
#   upstream   charts/tests/upstream-values.yaml (mattermost-helm mattermost-rtcd 1.4.1 style)
#   monitoring the dashboard ConfigMap on, on a cluster that serves PrometheusRule
GOLDEN_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC1091
. "$GOLDEN_DIR/../../e2e/envtest/versions.env"
# shellcheck disable=SC2034  # used by the scripts that source this
GOLDEN_CASES="default guide upstream monitoring"
GOLDEN_RELEASE=mattermost-rtcd
GOLDEN_NAMESPACE="chart-test"
GOLDEN_KUBE_VERSION=$K8S_VERSION
UPSTREAM_VALUES=$GOLDEN_DIR/upstream-values.yaml

# The guide's command (docs.mattermost.com, Calls "rtcd setup and configuration" with Helm).
# shellcheck disable=SC2191  # the = is part of helm's --set argument
GUIDE=(--set ingress.enabled=true --set ingress.host=rtcd.example.com
  --set service.annotations."service\.beta\.kubernetes\.io/aws-load-balancer-backend-protocol"=udp
  --set rtcd.ice.hostOverride=rtcd.example.com)

# golden_render HELM CHART CASE: the case's `helm template` on stdout
golden_render() {
  local helm=$1 chart=$2 args=()
  case $3 in
    default) ;;
    guide) args=("${GUIDE[@]}") ;;
    upstream) args=(-f "$UPSTREAM_VALUES") ;;
    monitoring) args=(--set monitoring.dashboard.enabled=true --set monitoring.dashboard.annotations.grafana_folder=Mattermost
      --set monitoring.prometheusRule.labels.release=kube-prometheus-stack
      --api-versions monitoring.coreos.com/v1/PrometheusRule) ;;
    *) echo "golden_render: unknown case '$3'" >&2; return 2 ;;
  esac
  "$helm" template "$GOLDEN_RELEASE" "$chart" --namespace "$GOLDEN_NAMESPACE" \
    --kube-version "$GOLDEN_KUBE_VERSION" ${args[@]+"${args[@]}"}
}
