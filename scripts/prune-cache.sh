#!/usr/bin/env bash
# Keeps the build cache under $HOME/.cache/rtcd-rs/ bounded. CI builds from a fresh clone each
# time, so incremental data never helps and old test binaries pile up: drop incremental
# directories, and when a target directory grows past the cap (RTCD_CACHE_MAX_GB, default 30),
# drop its debug profile (rebuilt once, cold).
set -euo pipefail
cache="${HOME}/.cache/rtcd-rs"
max_gb="${RTCD_CACHE_MAX_GB:-30}"
for target in "$cache/target" "$cache/target-dev"; do
	[[ -d "$target" ]] || continue
	find "$target" -maxdepth 3 -type d -name incremental -prune -exec rm -rf {} +
	size_gb=$(( $(du -sk "$target" | cut -f1) / 1024 / 1024 ))
	if (( size_gb > max_gb )); then
		echo "prune-cache: $target is ${size_gb} GiB (> ${max_gb}): removing its debug profile"
		rm -rf "$target/debug"
	fi
done
# Real-node runs a killed CI left behind (scripts/node-e2e.sh removes its own): their processes,
# cgroups and files, through the node's own clean-up.
if [[ -d "$cache/node-runs" ]]; then
	for run in "$cache"/node-runs/run.*; do
		[[ -d "$run" ]] || continue
		[[ -n "$(find "$run" -maxdepth 0 -mmin +180)" ]] || continue
		echo "prune-cache: removing the stale real-node run $run"
		"$(dirname "$0")/../e2e/node/down.sh" "$run/node" || true
		rm -rf "$run"
	done
fi
