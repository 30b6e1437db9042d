#!/usr/bin/env bash
# The operator's end-to-end tests against a real control plane (e2e/envtest: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kwok built from Go modules and cached), inside a private
# network namespace whose dummy interface carries the fake nodes' addresses, with a real rtcd on each.
#   scripts/operator-e2e.sh [test-name-filter]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}
if [ "${OPERATOR_E2E_IN_NETNS:-}" != 1 ]; then
  # Everything that needs the network (module proxy, crates) happens out here.
  BIN=${ENVTEST_BIN:-$("$ROOT/e2e/envtest/build.sh" | tail -n1)}
  cargo build --locked -q -p rtcd --bin rtcd --features fault-injection
  TEST=$("$ROOT/e2e/lib/cargo-test-bin.sh" rtcd-operator envtest)
  # rtcd's own Go client (service.Client), as the Calls plugin runs it: the compat suite's binary.
  COMPAT=${COMPAT_TEST_BIN:-$("$ROOT/e2e/compat/build-test.sh" | tail -n1)}
  exec env OPERATOR_E2E_IN_NETNS=1 ENVTEST_BIN="$BIN" TEST_BIN="$TEST" RTCD_BIN="$CARGO_TARGET_DIR/debug/rtcd" \
    COMPAT_TEST_BIN="$COMPAT" \
    unshare -n "$0" "$@"
fi

ip link set lo up
ip link add n0 type veth peer name n1
ip link set n1 up
ip link set n0 up
for a in 1 2 3 4 11 21 31 41 51 52 53 54 61 71 72 81 82; do ip addr add "198.18.1.$a/24" dev n0; done
T0=$(date +%s)
RUN=$("$ROOT/e2e/envtest/up.sh" | tail -n1)
echo "operator-e2e: control plane up in $(( $(date +%s) - T0 ))s ($RUN)"
trap '"$ROOT/e2e/envtest/down.sh" "$RUN"' EXIT
# shellcheck disable=SC1091
. "$RUN/env"
KUBECTL=$(command -v kubectl || true)
export KUBECTL RTCD_BIN
"$KUBECTL" apply --server-side -f "$ROOT/crds/rtcdclusters.yaml" >/dev/null
"$ROOT/e2e/lib/crd-established.sh" "$KUBECTL" rtcdclusters.rtcd-rs.dev
# The operator runs as its own ServiceAccount with exactly the shipped RBAC, so a missing verb fails.
# Its ServiceAccount and RBAC come from the chart, their single source.
# operator_rbac RELEASE-NAMESPACE FULLNAME OUT [helm args]: applies the chart's operator
# ServiceAccount + RBAC and writes a kubeconfig with that ServiceAccount's token to OUT.
operator_rbac() {
  local ns=$1 name=$2 out=$3 token
  shift 3
  "$KUBECTL" create namespace "$ns" >/dev/null
  helm template "$name" "$ROOT/charts/mattermost-rtcd" --namespace "$ns" --set fullnameOverride="$name" "$@" \
    --show-only templates/operator/serviceaccount.yaml --show-only templates/operator/rbac.yaml \
    | "$KUBECTL" apply -f - >/dev/null
  token=$("$KUBECTL" -n "$ns" create token "$name-operator" --duration=2h)
  "$KUBECTL" config view --raw --minify --flatten >"$out"
  KUBECONFIG="$out" "$KUBECTL" config set-credentials operator --token="$token" >/dev/null
  KUBECONFIG="$out" "$KUBECTL" config set-context --current --user=operator >/dev/null
}
# Cluster-wide (every test's operator, one Lease rtcd-system/rtcd-operator), and namespace-scoped
# (operator.watchNamespace=scoped, released into rtcd-scoped).
OPERATOR_KUBECONFIG="$RUN/operator.kubeconfig"
operator_rbac rtcd-system rtcd "$OPERATOR_KUBECONFIG"
SCOPED_KUBECONFIG="$RUN/scoped.kubeconfig"
"$KUBECTL" create namespace scoped >/dev/null
operator_rbac rtcd-scoped scoped "$SCOPED_KUBECONFIG" --set operator.watchNamespace=scoped
export OPERATOR_KUBECONFIG SCOPED_KUBECONFIG
"$TEST_BIN" --ignored --test-threads=1 "$@"
