#!/usr/bin/env bash
# `make fuzz`: runs every fuzz target (rtcd::fuzz, wrapped in fuzz/fuzz_targets) under
# libFuzzer with AddressSanitizer on the nightly toolchain, FUZZ_SECONDS each (default 180),
# and prints executions, coverage and crashes per target. New inputs go to a working corpus
# under $HOME/.cache/rtcd-rs/fuzz-corpus/ (the committed seeds in fuzz/corpus/ are read only);
# FUZZ_MERGE=1 merges the inputs that add coverage into fuzz/corpus/. A crash is left in
# fuzz/artifacts/<target>/: fix it, then commit the input under fuzz/regressions/<target>/,
# which `make test` replays.
#
#   FUZZ_TARGETS="ws_frame stun"   only these
#   FUZZ_SECONDS=600               longer
set -euo pipefail
cd "$(dirname "$0")/.."
version=0.13.2
tools="$HOME/.cache/rtcd-rs/tools/cargo-fuzz-$version"
if [[ ! -x "$tools/bin/cargo-fuzz" ]]; then
	cargo +nightly install --locked cargo-fuzz --version "$version" --root "$tools"
fi
export PATH="$tools/bin:$PATH"
export CARGO_TARGET_DIR="$HOME/.cache/rtcd-rs/target-fuzz"
targets="${FUZZ_TARGETS:-ws_frame dc_message stun rfc4571 video rebase config sfu}"
seconds="${FUZZ_SECONDS:-180}"
work="$HOME/.cache/rtcd-rs/fuzz-corpus"
report="$CARGO_TARGET_DIR/fuzz-report.md"
mkdir -p "$CARGO_TARGET_DIR"
{
	echo "| target | seconds | executions | exec/s | coverage (edges) | features | corpus | crashes | slow units |"
	echo "|---|---|---|---|---|---|---|---|---|"
} > "$report"
cd fuzz
failed=0
for t in $targets; do
	mkdir -p "$work/$t"
	log="$CARGO_TARGET_DIR/fuzz-$t.log"
	echo "fuzz: $t for ${seconds}s" >&2
	set +e
	cargo +nightly fuzz run --release "$t" "$work/$t" "corpus/$t" -- \
		-max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=4096 -timeout=20 > "$log" 2>&1
	status=$?
	set -e
	execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
	rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
	cov=$(grep -oE '(DONE|#[0-9]+).*cov: [0-9]+' "$log" | grep -oE 'cov: [0-9]+' | tail -1 | grep -oE '[0-9]+')
	ft=$(grep -oE 'ft: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+')
	corp=$(find "$work/$t" -type f | wc -l)
	# crash-, leak-, oom- and timeout- inputs are failures; slow-unit- ones (over 10 s) are not.
	crashes=$(find "artifacts/$t" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'oom-*' -o -name 'timeout-*' \) 2>/dev/null | wc -l)
	slow=$(find "artifacts/$t" -type f -name 'slow-unit-*' 2>/dev/null | wc -l)
	echo "| $t | $seconds | ${execs:-?} | ${rate:-?} | ${cov:-?} | ${ft:-?} | $corp | $crashes | $slow |" >> "$report"
	if [[ $status -ne 0 ]]; then
		echo "fuzz: $t FAILED (exit $status); see $log and fuzz/artifacts/$t/" >&2
		tail -n 40 "$log" >&2
		failed=1
	fi
	if [[ "${FUZZ_MERGE:-}" == 1 ]]; then
		cargo +nightly fuzz run --release "$t" "corpus/$t" "$work/$t" -- -merge=1 >> "$log" 2>&1 || true
	fi
done
cat "$report"
exit "$failed"
