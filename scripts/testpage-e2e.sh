#!/usr/bin/env bash
# The end-user connectivity test page (issue 17) in headless Chromium, inside the test's own
# network namespace: with [api] enable_connectivity_test on, /test reports UDP and TCP
# reachable (round trip, the server's candidate) and "Calls will work"; with the media port's
# UDP dropped by nftables, UDP blocked, TCP reachable and the TCP-only verdict; without the
# flag, /test and /test/offer are 404; a bad offer gets a 400 naming what is wrong.
# Prints "PASS [testpage: …]" / "FAIL [testpage: …]".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}

if [ "${TESTPAGE_INNER:-}" != 1 ]; then
  cargo build --locked -q -p rtcd -p rtcd-loadtest --features rtcd/fault-injection
  "$ROOT/e2e/browser/setup.sh" ice-tcp >&2
  exec env TESTPAGE_INNER=1 unshare -n "$0" "$@"
fi

fails=0
pass() { echo "PASS [testpage: $1]"; }
fail() { echo "FAIL [testpage: $1]"; fails=$((fails + 1)); }
ip link set lo up
RTCD=$CARGO_TARGET_DIR/debug/rtcd
DIR=$(mktemp -d /tmp/testpage.XXXXXX)
SERVER=""
trap 'kill $SERVER 2>/dev/null || true; wait 2>/dev/null || true; nft delete table inet testpage 2>/dev/null || true; rm -rf "$DIR"' EXIT
# shellcheck disable=SC1091
. "$ROOT/e2e/lib/wait-version.sh"

start() { # extra env...
  env -i PATH=/usr/bin:/bin RTCD_API_HTTP_LISTENADDRESS=127.0.0.1:8045 \
    RTCD_RTC_ICEPORTUDP=8443 RTCD_RTC_ICEPORTTCP=8443 RTCD_STORE_DATASOURCE="$DIR/store" \
    RTCD_LOGGER_ENABLEFILE=false RTCD_LOGGER_CONSOLELEVEL=WARN "$@" "$RTCD" >>"$DIR/server.log" 2>&1 &
  SERVER=$!
  wait_for_version 8045 "$SERVER" || { cat "$DIR/server.log"; fail "rtcd did not start"; exit 1; }
}
stop() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; SERVER=""; }

# status METHOD PATH [BODY]: the HTTP status, and the body in $DIR/body.
status() {
  python3 - "$@" "$DIR/body" <<'PY'
import sys, urllib.request, urllib.error
method, path = sys.argv[1], sys.argv[2]
body = sys.argv[3].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request("http://127.0.0.1:8045" + path, data=body, method=method,
                             headers={"Content-Type": "application/json"})
try:
    r = urllib.request.urlopen(req, timeout=5)
    code, text = r.status, r.read()
except urllib.error.HTTPError as e:
    code, text = e.code, e.read()
open(sys.argv[-1], "wb").write(text)
print(code)
PY
}

start
if [ "$(status GET /test)" = 404 ] && [ "$(status POST /test/offer '{"sdp":"v=0"}')" = 404 ]; then
  pass "off by default: /test and /test/offer are 404"
else
  fail "/test answers without enable_connectivity_test"
fi
stop

start RTCD_API_ENABLECONNECTIVITYTEST=true
code=$(status POST '/test/offer?transport=sctp' '{"sdp":"v=0"}')
if [ "$code" = 400 ] && grep -q 'sctp.*expected udp or tcp' "$DIR/body"; then
  pass "a bad transport gets 400 naming it: $(cat "$DIR/body")"
else
  fail "a bad transport got $code: $(cat "$DIR/body")"
fi
code=$(status POST /test/offer '{"offer": 1}')
if [ "$code" = 400 ] && grep -q 'body: expected' "$DIR/body"; then
  pass "a malformed body gets 400 naming it"
else
  fail "a malformed body got $code: $(cat "$DIR/body")"
fi

# page NAME: Chromium's reading of the page into $DIR/NAME.json.
page() {
  node "$ROOT/e2e/browser/testpage.mjs" http://127.0.0.1:8045/test >"$DIR/$1.json" 2>"$DIR/$1.err" || {
    cat "$DIR/$1.err"
    echo '{}' >"$DIR/$1.json"
  }
  echo "  $1: $(cat "$DIR/$1.json")"
}
# judge NAME UDP TCP VERDICT
judge() {
  python3 - "$DIR/$1.json" "$@" <<'PY'
import json, sys
path, name, udp, tcp, verdict = sys.argv[1:]
r = json.load(open(path))
bad = 0
def check(ok, what):
    global bad
    print(("PASS" if ok else "FAIL") + f" [testpage, {name}: {what}]")
    bad += 0 if ok else 1
for t, want in (("udp", udp), ("tcp", tcp)):
    row = r.get(t, {})
    if want == "ok":
        check(row.get("state") == "ok" and row.get("result") == "reachable"
              and row.get("candidate", "").startswith(f"{t} 127.0.0.1:8443") and row.get("rtt", "").endswith(" ms"),
              f"{t} reachable, with its round trip and the server's {t} candidate ({row})")
    else:
        check(row.get("state") == "failed" and row.get("result", "").startswith("blocked"), f"{t} shown blocked ({row.get('result')})")
check(r.get("verdict") == verdict, f"verdict {r.get('verdict')}: {r.get('text')}")
sys.exit(1 if bad else 0)
PY
}

page working
judge working ok ok good || fails=$((fails + 1))
nft -f - <<'EOF2'
table inet testpage {
  chain input {
    type filter hook input priority 0; policy accept;
    udp dport 8443 drop
  }
}
EOF2
page udp-blocked
judge udp-blocked failed ok tcp-only || fails=$((fails + 1))
nft delete table inet testpage

echo "testpage: $fails failure(s)"
[ "$fails" = 0 ]
