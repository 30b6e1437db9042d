#!/usr/bin/env bash
# The connectivity canary (issue 17): `rtcd-loadtest probe <url>` against our rtcd inside the
# test's own network namespace, on a working instance and on one whose UDP media port nftables
# drops (the "calls drop after 10-15 s because UDP is blocked" case): UDP then ICE-TCP, with
# reachability, connect time, RTT and the winning candidate; exit 0 only when every transport
# is reachable; an unusable API exits 2 naming the problem.
# Prints "PASS [canary: …]" / "FAIL [canary: …]".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}

if [ "${CANARY_INNER:-}" != 1 ]; then
  cargo build --locked -q -p rtcd -p rtcd-loadtest --features rtcd/fault-injection
  exec env CANARY_INNER=1 unshare -n "$0" "$@"
fi

fails=0
pass() { echo "PASS [canary: $1]"; }
fail() { echo "FAIL [canary: $1]"; fails=$((fails + 1)); }
ip link set lo up
RTCD=$CARGO_TARGET_DIR/debug/rtcd
LT=$CARGO_TARGET_DIR/debug/rtcd-loadtest
DIR=$(mktemp -d /tmp/canary.XXXXXX)
SERVER=""
trap 'kill $SERVER 2>/dev/null || true; wait 2>/dev/null || true; nft delete table inet canary 2>/dev/null || true; rm -rf "$DIR"' EXIT

env -i PATH=/usr/bin:/bin RTCD_API_HTTP_LISTENADDRESS=127.0.0.1:8045 RTCD_API_SECURITY_ALLOWSELFREGISTRATION=true \
  RTCD_RTC_ICEPORTUDP=8443 RTCD_RTC_ICEPORTTCP=8443 RTCD_STORE_DATASOURCE="$DIR/store" \
  RTCD_LOGGER_ENABLEFILE=false RTCD_LOGGER_CONSOLELEVEL=WARN "$RTCD" >"$DIR/server.log" 2>&1 &
SERVER=$!
# shellcheck disable=SC1091
. "$ROOT/e2e/lib/wait-version.sh"
wait_for_version 8045 "$SERVER" || { cat "$DIR/server.log"; fail "rtcd did not start"; exit 1; }

# probe NAME: runs the canary, its exit status in $DIR/NAME.rc and its JSON in $DIR/NAME.json.
probe() {
  local rc=0
  "$LT" probe http://127.0.0.1:8045 --timeout 6 --json "$DIR/$1.json" >"$DIR/$1.txt" 2>"$DIR/$1.err" || rc=$?
  echo "$rc" >"$DIR/$1.rc"
  sed "s/^/  $1: /" "$DIR/$1.txt"
}

# judge NAME EXPECTED_RC UDP TCP: UDP/TCP are "up" or "down".
judge() {
  python3 - "$DIR/$1.json" "$(cat "$DIR/$1.rc")" "$@" <<'EOF'
import json, sys
path, rc, name, want_rc, udp, tcp = sys.argv[1:]
bad = 0
def check(ok, what):
    global bad
    print(("PASS" if ok else "FAIL") + f" [canary, {name}: {what}]")
    bad += 0 if ok else 1
check(rc == want_rc, f"exit status {rc} (want {want_rc})")
r = json.load(open(path))
a = {x["transport"]: x for x in r["attempts"]}
check(list(a) == ["udp", "tcp"], f"UDP first, then ICE-TCP ({list(a)})")
for t, want in (("udp", udp), ("tcp", tcp)):
    x = a.get(t, {})
    if want == "up":
        check(x.get("reachable") is True and x.get("candidate") == f"{t} 127.0.0.1:8443",
              f"{t} reachable through the server's {t} candidate 127.0.0.1:8443 ({x.get('candidate')})")
        check(x.get("connect_ms") is not None and x["connect_ms"] > 0, f"{t} connect time measured ({x.get('connect_ms')} ms)")
        check(x.get("rtt_ms") is not None and x["rtt_ms"] >= 0, f"{t} RTT measured ({x.get('rtt_ms')} ms)")
    else:
        check(x.get("reachable") is False and "did not complete" in (x.get("error") or ""),
              f"{t} reported unreachable: {x.get('error')}")
sys.exit(1 if bad else 0)
EOF
}

probe working
judge working 0 up up || fails=$((fails + 1))

# The media port's UDP dropped, as a firewall would: ICE-TCP still carries the call.
nft -f - <<'EOF'
table inet canary {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 8443 drop
  }
}
EOF
probe udp-blocked
judge udp-blocked 1 down up || fails=$((fails + 1))
grep -q "udp: UNREACHABLE" "$DIR/udp-blocked.txt" && pass "the summary says plainly that UDP is unreachable" \
  || fail "the summary does not say UDP is unreachable"
nft delete table inet canary

# An unusable API: exit 2, naming it.
rc=0
"$LT" probe http://127.0.0.1:1 --timeout 2 >"$DIR/noapi.txt" 2>"$DIR/noapi.err" || rc=$?
if [ "$rc" = 2 ] && grep -q "127.0.0.1:1" "$DIR/noapi.err"; then
  pass "an unreachable API exits 2 naming it: $(head -1 "$DIR/noapi.err")"
else
  cat "$DIR/noapi.err"; fail "an unreachable API exited $rc"
fi

echo "canary: $fails failure(s)"
[ "$fails" = 0 ]
