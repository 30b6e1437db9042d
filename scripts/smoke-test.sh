#!/usr/bin/env bash
# make test's part of the admins' smoke suite (e2e/smoke): it builds rtcd-smoke and runs its
# unit tests (go vet and go test: preflight verdict, rtcd URL, session placement, report,
# synthetic media). The suite itself needs a real Mattermost server with the Calls plugin:
# `make smoke MM_URL=... MM_ADMIN_TOKEN=...` (docs/smoke.md).
set -euo pipefail
cd "$(dirname "$0")/../e2e/smoke"
if ! command -v go >/dev/null 2>&1; then
	export PATH="$PATH:/usr/local/go/bin"
fi
bin="$(./build.sh)"
echo "smoke: built $bin"
GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" nice -n 10 go vet ./...
set +e
out="$(GOFLAGS="${GOFLAGS:-} -mod=readonly -buildvcs=false" nice -n 10 go test -count=1 -v ./... 2>&1)"
rc=$?
set -e
# The test names and verdicts (go test's own status decides).
grep -E '^(--- (PASS|FAIL)|PASS$|FAIL|ok |panic)' <<<"$out" || true
[[ $rc -eq 0 ]] || printf '%s\n' "$out" | tail -40
exit "$rc"
