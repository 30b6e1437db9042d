#!/usr/bin/env bash
# Maintainer tool: regenerate e2e/envtest/k8s/go.mod + go.sum for K8S_VERSION in ../versions.env.
# Run on a machine with Go and the module proxy when bumping Kubernetes, then commit go.mod/go.sum.
#
# Why: k8s.io/kubernetes requires its staging modules (k8s.io/api, client-go, ...) at v0.0.0 and maps
# them to ./staging with `replace`, which only applies inside that module. A consumer must replace each
# staging module with its published v0.<minor>.<patch> itself. The staging set changes between releases,
# so it is derived from k8s.io/kubernetes' own go.mod here, never hand-kept.
set -euo pipefail
cd "$(dirname "$0")"
# shellcheck disable=SC1091
. ../versions.env
export GOTOOLCHAIN=local GOFLAGS=-mod=mod
V=${K8S_VERSION:?}; SV=v0.${V#1.}                      # 1.36.3 -> v0.36.3
GOMOD=$(go mod download -json "k8s.io/kubernetes@v$V" | python3 -c 'import json,sys;print(json.load(sys.stdin)["GoMod"])')
GOLINE=$(awk '$1=="go"{print $2; exit}' "$GOMOD")
GODEBUG_DEFAULT=$(awk '$1=="godebug" && $2 ~ /^default=/{print $2; exit}' "$GOMOD")
STAGING=$(awk '$1 ~ /^k8s\.io\// && $2=="v0.0.0"{print $1}' "$GOMOD" | sort -u)
[ -n "$STAGING" ] || { echo "gen-gomod: no v0.0.0 staging requires found in $GOMOD" >&2; exit 1; }
rm -f go.mod go.sum
go mod init example.invalid/rtcd-rs/envtest-k8s >/dev/null 2>&1
go mod edit -go="$GOLINE"
[ -z "$GODEBUG_DEFAULT" ] || go mod edit -godebug="$GODEBUG_DEFAULT"
for m in $STAGING; do go mod edit -replace="$m=$m@$SV"; done
go mod edit -require="k8s.io/kubernetes@v$V"
for t in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do go mod edit -tool="k8s.io/kubernetes/cmd/$t"; done
go mod tidy
echo "gen-gomod: k8s.io/kubernetes v$V, go $GOLINE, $(echo "$STAGING" | wc -l) staging replaces at $SV" >&2
