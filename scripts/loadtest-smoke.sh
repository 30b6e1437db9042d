#!/usr/bin/env bash
# A few seconds of rtcd-loadtest against our rtcd, to keep the load generator working (no
# figure is judged by time here; `make bench` measures). Inside a private network namespace:
# rtcd (debug build) on loopback, then 2 calls × 3 participants, 1 unmuted each, call
# screen shares on (VP8 simulcast h/l), 3 s window; the JSON report must show every participant
# connected with its data channel (a third of them over ICE-TCP), audio and screen forwarded with little loss, join → first
# packet measured, and the server's CPU/RSS read from /proc. Bad flags and an unreachable URL
# must fail with an error naming the problem. After the run every internal table
# (rtcd_table_entries, rtcd_engine_table_entries) must be back to zero. Prints "PASS [loadtest: …]" / "FAIL [loadtest: …]".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}

if [ "${LOADTEST_SMOKE_INNER:-}" != 1 ]; then
  cargo build --locked -q -p rtcd -p rtcd-loadtest --features rtcd/fault-injection
  exec env LOADTEST_SMOKE_INNER=1 unshare -n "$0" "$@"
fi

fails=0
pass() { echo "PASS [loadtest: $1]"; }
fail() { echo "FAIL [loadtest: $1]"; fails=$((fails + 1)); }
ip link set lo up
RTCD=$CARGO_TARGET_DIR/debug/rtcd
LT=$CARGO_TARGET_DIR/debug/rtcd-loadtest
SERVER=""
trap 'kill $SERVER 2>/dev/null || true; wait 2>/dev/null || true' EXIT

# One run per engine shard count: 2 spreads the two calls over both shards (and a third of the
# peers over ICE-TCP), 1 is the single-core case.
smoke() {
local SHARDS=$1
local DIR before=$fails
DIR=$(mktemp -d /tmp/loadtest-smoke.XXXXXX)
echo "--- rtcd with $SHARDS engine shard(s)"

env -i PATH=/usr/bin:/bin RTCD_API_HTTP_LISTENADDRESS=127.0.0.1:18045 RTCD_API_SECURITY_ALLOWSELFREGISTRATION=true \
  RTCD_RTC_ICEPORTUDP=18443 RTCD_RTC_ICEPORTTCP=18443 RTCD_STORE_DATASOURCE="$DIR/store" \
  RTCD_LOGGER_ENABLEFILE=false RTCD_LOGGER_CONSOLELEVEL=WARN RTCD_RTC_ENGINESHARDS="$SHARDS" \
  "$RTCD" >"$DIR/server.log" 2>&1 &
SERVER=$!
# shellcheck disable=SC1091
. "$ROOT/e2e/lib/wait-version.sh"
wait_for_version 18045 "$SERVER" || { cat "$DIR/server.log"; fail "rtcd did not start ($SHARDS shards)"; exit 1; }

if "$LT" --url http://127.0.0.1:18045 --server-pid "$SERVER" --calls 2 --users-per-call 3 --unmuted 1 --screen \
  --tcp-share 0.34 --duration 3 --warmup 1 --json "$DIR/report.json" >"$DIR/out.txt" 2>"$DIR/err.txt"; then
  pass "a run of 2 calls × 3 (1 unmuted, screen, one third over ICE-TCP) completes on $SHARDS shard(s)"
else
  cat "$DIR/err.txt"; fail "the run exited $?"
fi
cat "$DIR/out.txt"
SHARDS=$SHARDS python3 - "$DIR/report.json" <<'EOF' || fails=$((fails + 1))
import json, os, sys
r = json.load(open(sys.argv[1]))
s, srv = r["summary"], r["server"]
bad = 0
def check(ok, what):
    global bad
    print(("PASS" if ok else "FAIL") + f" [loadtest, {os.environ['SHARDS']} shard(s): {what}]")
    bad += 0 if ok else 1
check(s["participants"] == 6 and s["connected"] == 6 and s["ice_dtls_failures"] == 0,
      f"6 participants, all connected over ICE+DTLS ({s['connected']} connected, {s['ice_dtls_failures']} failures)")
check(s["connected_tcp"] == 2, f"2 of them over ICE-TCP ({s['connected_tcp']})")
check(s["data_channels_open"] == 6, f"every calls-dc data channel opened ({s['data_channels_open']})")
check(s["closed_by_server"] == 0 and s["signaling_errors"] == 0 and r["ws_bad_frames"] == 0,
      "no session closed, no signaling error, no undecodable frame")
a = s["audio"] or {}
# 2 calls × 1 talker × 2 listeners × 50 pkt/s × 3 s = 600 owed copies.
check(a.get("expected", 0) >= 500 and a.get("loss_pct", 100) < 2.0,
      f"audio forwarded to every listener: {a.get('received')}/{a.get('expected')}, loss {a.get('loss_pct')}%")
check((a.get("latency_ms") or {}).get("n", 0) == a.get("received"), "a latency sample per audio packet")
v = s["video"] or {}
check(v.get("received", 0) > 100 and v.get("loss_pct", 100) < 5.0,
      f"screen share forwarded to the viewers: {v.get('received')} packets, loss {v.get('loss_pct')}%")
t = s["join_to_first_packet_ms"] or {}
# The talker-sharer of each call has nobody to hear: 4 participants wait for media.
check(t.get("n") == 4, f"join → first packet measured for the 4 listeners ({t.get('n')})")
check(srv is not None and srv["cpu_us_per_forwarded_packet"] and srv["rss_steady_kib"] > 0 and srv["threads"] >= 1,
      "server CPU µs/packet and RSS read from /proc")
check(r["ws_vad_messages"] > 0, f"the talkers' audio levels drive rtcd's VAD ({r['ws_vad_messages']} messages)")
sys.exit(1 if bad else 0)
EOF
# Everyone has left: every internal table is back to zero (tokio tasks back to the idle count;
# the client's one bearer token stays until it expires, by design; the scrape's own connection
# is the one source address with an open API connection; the limiter keeps a failed login for
# its 60 s window: the generator's first login fails before it registers).
SHARDS=$SHARDS python3 - <<'EOF' || fails=$((fails + 1))
import os, re, sys, time, urllib.request
def tables():
    text = urllib.request.urlopen("http://127.0.0.1:18045/metrics", timeout=5).read().decode()
    out = {}
    for m in re.finditer(r'^rtcd_(table_entries|engine_table_entries)\{([^}]*)\} (\S+)$', text, re.M):
        out[m.group(1) + "{" + m.group(2) + "}"] = float(m.group(3))
    return out
# 45 s: a session whose leave never came is closed by the server once ICE has been disconnected
# for 30 s; that counts (the label says how long it took), a session that stays does not.
t0 = time.time()
deadline = t0 + 45
while True:
    t = tables()
    busy = {k: v for k, v in t.items() if v != 0 and "tokio_tasks" not in k and "auth_tokens" not in k
            and "auth_limiter" not in k
            and not ("http_addresses" in k and v <= 1)}
    tasks = next((v for k, v in t.items() if "tokio_tasks" in k), None)
    if (not busy and tasks is not None and tasks <= 16) or time.time() > deadline:
        break
    time.sleep(0.5)
ok = not busy and tasks is not None and tasks <= 16 and any("engine_table_entries" in k for k in t)
print(("PASS" if ok else "FAIL") + f" [loadtest, {os.environ['SHARDS']} shard(s): every table back to zero after everyone left"
      + (f": {busy}, tokio tasks {tasks}" if not ok else f" ({len(t)} tables, tokio tasks {tasks:.0f}, after {time.time() - t0:.1f} s)") + "]")
sys.exit(0 if ok else 1)
EOF
kill "$SERVER" 2>/dev/null || true
wait "$SERVER" 2>/dev/null || true
SERVER=""
if [ "$fails" -ne "$before" ]; then
  echo "--- server log ($SHARDS shards)"; tail -n 40 "$DIR/server.log"
fi
rm -rf "$DIR"
}

smoke 2
smoke 1

out=$("$LT" --users-per-call 2 --unmuted 3 2>&1) && fail "--unmuted > --users-per-call accepted" || {
  [[ $out == *"--unmuted 3 is more than --users-per-call 2"* ]] && pass "a bad flag is refused, naming it" || fail "bad flag message: $out"
}
out=$("$LT" --url http://127.0.0.1:1 --duration 1 2>&1) && fail "an unreachable URL succeeded" || {
  [[ $out == *"127.0.0.1:1"* ]] && pass "an unreachable server is reported with its URL" || fail "unreachable message: $out"
}
if [ $fails -ne 0 ]; then
  exit 1
fi
