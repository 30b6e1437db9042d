#!/usr/bin/env bash
# Sums cargo's "test result:" lines, go test's top-level "--- PASS/FAIL:" lines and the
# e2e runners' "PASS [label]"/"FAIL [label]" lines into one
# closing line: "tests: N passed, M failed".
set -euo pipefail
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed;?$/) p += $i; if ($(i+1) ~ /^failed;?$/) f += $i } }
     /^--- PASS: / { p += 1 }
     /^--- FAIL: / { f += 1 }
     /^PASS \[/ { p += 1 }
     /^FAIL \[/ { f += 1 }
     END { printf "tests: %d passed, %d failed\n", p, f; if (p == 0 || f > 0) exit 1 }' "$@"
