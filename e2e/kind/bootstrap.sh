#!/usr/bin/env bash
# A kind cluster for the cluster-agnostic end-to-end suite (e2e/cluster, package rtcd-e2e), for
# machines WITH Docker, kind (v0.32), kubectl and helm. See e2e/kind/README.md.
#
#   e2e/kind/bootstrap.sh [up]     create the cluster if missing, build both images, load them
#   e2e/kind/bootstrap.sh env      only print the environment for an existing cluster
#   e2e/kind/bootstrap.sh teardown delete the cluster (and its kubeconfig file)
#
# `up` and `env` print `export ...` lines on stdout and everything else on stderr, so
#   eval "$(e2e/kind/bootstrap.sh)"
# sets KUBECONFIG, E2E_SET and E2E_NODE_LABEL in the calling shell. Re-running is safe: an existing
# cluster is reused, images are rebuilt (unchanged sources hit Docker's build cache) and reloaded.
#
# Environment:
#   KIND_CLUSTER      cluster name (default rtcd-e2e)
#   KIND_NODE_IMAGE   node image for a new cluster (default: kind's own, kindest/node:v1.36.1 for v0.32)
#   E2E_KUBECONFIG    where to write the cluster's kubeconfig
#                     (default <repo>/target/e2e-kind/<cluster>.kubeconfig; ~/.kube/config is not touched)
#   E2E_SKIP_BUILD=1  load the existing rtcd-rs/rtcd:e2e and rtcd-rs/rtcd-operator:e2e images without building
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
cluster=${KIND_CLUSTER:-rtcd-e2e}
kubeconfig=${E2E_KUBECONFIG:-$repo/target/e2e-kind/$cluster.kubeconfig}
rtcd_image=rtcd-rs/rtcd:e2e
operator_image=rtcd-rs/rtcd-operator:e2e
node_label=rtcd-rs.dev/e2e-pool

# Chart values (charts/mattermost-rtcd/values.yaml) for the locally built images. pullPolicy Never:
# the images exist only on the kind nodes. The rtcd pods' sysctl init container is switched off:
# kind nodes are containers in their own network namespace, where the global net.core.rmem_max /
# wmem_max do not exist, so `sysctl -w` would fail and the pods would never start. (The operator
# also gives that init container the rtcd pullPolicy, so with Never its busybox image would have
# to be loaded onto the nodes too.)
e2e_set="image.repository=rtcd-rs/rtcd,image.tag=e2e,image.pullPolicy=Never"
e2e_set+=",operator.image.repository=rtcd-rs/rtcd-operator,operator.image.tag=e2e,operator.image.pullPolicy=Never"
e2e_set+=",rtcdCluster.spec.sysctls.enabled=false"

log() { printf 'bootstrap: %s\n' "$*" >&2; }
die() { printf 'bootstrap: error: %s\n' "$*" >&2; exit 1; }

need() {
  local cmd=$1 hint=$2
  command -v "$cmd" >/dev/null 2>&1 || die "'$cmd' not found in PATH. $hint"
}

need_docker() {
  need docker "Install Docker (https://docs.docker.com/engine/install/); kind runs its nodes as Docker containers."
  docker info >/dev/null 2>&1 \
    || die "cannot reach the Docker engine ('docker info' failed). Start the daemon or check permissions on its socket."
}

need_kind() {
  need kind "Install kind v0.32 (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)."
  local v
  v=$(kind version 2>/dev/null | awk '{print $2}') || true
  case "$v" in
    v0.32.*) ;;
    *) log "warning: kind ${v:-(unknown version)}; this set-up was written for kind v0.32" ;;
  esac
}

cluster_exists() {
  kind get clusters 2>/dev/null | grep -qx -- "$cluster"
}

write_kubeconfig() {
  mkdir -p "$(dirname "$kubeconfig")"
  (umask 077 && kind get kubeconfig --name "$cluster" >"$kubeconfig")
}

# export NAME='value', quoted for any POSIX shell.
print_export() {
  local q=\'
  printf "export %s='%s'\n" "$1" "${2//$q/$q\\$q$q}"
}

print_env() {
  print_export KUBECONFIG "$kubeconfig"
  print_export E2E_SET "$e2e_set"
  print_export E2E_NODE_LABEL "$node_label"
}

up() {
  need_docker
  need_kind
  need kubectl "Install kubectl (https://kubernetes.io/docs/tasks/tools/)."
  need helm "Install helm (https://helm.sh/docs/intro/install/); the suite runs it."

  if cluster_exists; then
    log "cluster '$cluster' exists; reusing it"
  else
    log "creating cluster '$cluster' (1 control-plane, 2 workers labelled $node_label=true)"
    local args=(create cluster --name "$cluster" --config "$here/kind-config.yaml"
      --kubeconfig "$kubeconfig" --wait 180s)
    [[ -n "${KIND_NODE_IMAGE:-}" ]] && args+=(--image "$KIND_NODE_IMAGE")
    mkdir -p "$(dirname "$kubeconfig")"
    kind "${args[@]}" >&2
  fi
  write_kubeconfig
  kubectl --kubeconfig "$kubeconfig" wait --for=condition=Ready node --all --timeout=180s >&2

  if [[ "${E2E_SKIP_BUILD:-}" == 1 ]]; then
    log "E2E_SKIP_BUILD=1: not building $rtcd_image and $operator_image"
    docker image inspect "$rtcd_image" "$operator_image" >/dev/null 2>&1 \
      || die "E2E_SKIP_BUILD=1 but $rtcd_image or $operator_image does not exist locally"
  else
    log "building $rtcd_image (Dockerfile.rtcd)"
    (cd "$repo" && docker build -f Dockerfile.rtcd -t "$rtcd_image" .) >&2
    log "building $operator_image (Dockerfile.operator)"
    (cd "$repo" && docker build -f Dockerfile.operator -t "$operator_image" .) >&2
  fi

  log "loading the images onto every node of '$cluster'"
  kind load docker-image --name "$cluster" "$rtcd_image" >&2
  kind load docker-image --name "$cluster" "$operator_image" >&2

  log "ready. Run the suite from $repo with:"
  log "  eval \"\$(e2e/kind/bootstrap.sh env)\" && cargo test -p rtcd-e2e -- --ignored --nocapture"
  print_env
}

env_only() {
  need_kind
  cluster_exists || die "no kind cluster '$cluster'; run '$0 up' first"
  write_kubeconfig
  print_env
}

teardown() {
  need_kind
  if cluster_exists; then
    log "deleting cluster '$cluster'"
    kind delete cluster --name "$cluster" --kubeconfig "$kubeconfig" >&2
  else
    log "no kind cluster '$cluster'; nothing to delete"
  fi
  rm -f -- "$kubeconfig"
}

case "${1:-up}" in
  up) up ;;
  env) env_only ;;
  teardown | down) teardown ;;
  -h | --help | help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "unknown command '$1' (expected: up, env, teardown)" ;;
esac
