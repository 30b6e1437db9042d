#!/usr/bin/env bash
# Builds one integration-test target and prints the path of its executable, so a runner can
# start it later inside a network namespace (where cargo cannot reach the registry).
#   e2e/lib/cargo-test-bin.sh <package> <test-target>
set -euo pipefail
pkg=${1:?usage: cargo-test-bin.sh <package> <test-target>}
target=${2:?usage: cargo-test-bin.sh <package> <test-target>}
bin=$(cargo test --locked -q -p "$pkg" --test "$target" --no-run --message-format=json 2>/dev/null \
  | python3 -c 'import json, sys
want = sys.argv[1]
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == want and m.get("executable"):
        print(m["executable"])' "$target" | tail -n1)
[ -x "$bin" ] || { echo "cargo-test-bin: no executable for test $target of $pkg" >&2; exit 1; }
echo "$bin"
