#!/usr/bin/env bash
# Runs browser e2e scenarios against one server, one run.sh (one network
# namespace, one server process) per scenario, and goes on after a failure.
# Each run prints its own "PASS [label] …" / "FAIL [label] …" line.
#
#   e2e/browser/run-scenarios.sh <path-to-server-binary> <label> [scenario...]
#
# Default scenarios: audio ice-tcp turn mixed camera camera-av1 screen loss werift.
# Exit 0 when all passed, 1 when
# any failed, 2 for usage errors.
set -uo pipefail

if [[ $# -lt 2 ]]; then
	echo "usage: $0 <path-to-server-binary> <label> [scenario...]" >&2
	exit 2
fi
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
server_bin="$1"
label="$2"
shift 2
scenarios=("$@")
if [[ ${#scenarios[@]} -eq 0 ]]; then
	scenarios=(audio ice-tcp turn mixed camera camera-av1 screen loss werift)
fi

failed=()
for s in "${scenarios[@]}"; do
	"$here/run.sh" "$server_bin" "$label" "$s"
	rc=$?
	if [[ $rc -eq 2 ]]; then
		exit 2
	fi
	if [[ $rc -ne 0 ]]; then
		failed+=("$s")
	fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
	echo "run-scenarios: [$label] failed: ${failed[*]}" >&2
	exit 1
fi
exit 0
