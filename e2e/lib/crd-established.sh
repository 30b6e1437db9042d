#!/usr/bin/env bash
# Waits (at most 30 s) until a CRD is Established. `kubectl wait --for condition=established`
# fails at once ("accessor error: <nil>") when it looks before the API server has written the
# CRD's first conditions, so poll instead.
#   e2e/lib/crd-established.sh KUBECTL CRD-NAME [kubectl args...]
set -euo pipefail
kubectl=$1 crd=$2
shift 2
for _ in $(seq 60); do
  st=$("$kubectl" "$@" get crd "$crd" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}' 2>/dev/null || true)
  if [ "$st" = True ]; then exit 0; fi
  sleep 0.5
done
echo "crd-established: $crd is not Established after 30 s" >&2
exit 1
