#!/usr/bin/env bash
# `make soak`: rtcd (release) under rtcd-loadtest with churn for SOAK_MINUTES (default 30; the
# documented short profile is SOAK_MINUTES=5), inside a private network namespace. Every
# SOAK_SAMPLE seconds (default 10) it records the server's RSS, open file descriptors and
# threads from /proc, and every rtcd_table_entries / rtcd_engine_table_entries series (tokio
# tasks, sessions, routes, limiter entries, ICE-TCP connections …). It fails when something
# keeps growing: a quantity whose maximum AND median over the last third of the run both exceed
# those of the middle third by more than 10 % (plus a small absolute slack), and when any table is not
# back to zero once everyone has left. Writes $CARGO_TARGET_DIR/soak/samples.csv and summary.txt.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/rtcd-rs/target}
minutes=${SOAK_MINUTES:-30}
sample=${SOAK_SAMPLE:-10}

if [ "${SOAK_INNER:-}" != 1 ]; then
  cargo build --locked --release -q -p rtcd
  cargo build --locked --release -q -p rtcd-loadtest
  exec env SOAK_INNER=1 unshare -n "$0" "$@"
fi

ip link set lo up
out="$CARGO_TARGET_DIR/soak"
rm -rf "$out"; mkdir -p "$out"
store=$(mktemp -d /tmp/soak-store.XXXXXX)
env -i PATH=/usr/bin:/bin RTCD_API_HTTP_LISTENADDRESS=127.0.0.1:18045 RTCD_API_SECURITY_ALLOWSELFREGISTRATION=true \
  RTCD_RTC_ICEPORTUDP=18443 RTCD_RTC_ICEPORTTCP=18443 RTCD_STORE_DATASOURCE="$store" \
  RTCD_LOGGER_ENABLEFILE=false RTCD_LOGGER_CONSOLELEVEL=WARN \
  "$CARGO_TARGET_DIR/release/rtcd" >"$out/server.log" 2>&1 &
server=$!
lt=""
trap 'kill $lt $server 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$store"' EXIT
# shellcheck disable=SC1091
. "$ROOT/e2e/lib/wait-version.sh"
wait_for_version 18045 "$server" || { cat "$out/server.log"; exit 1; }

# 4 calls × 4 (one talker each, call 1 shares its screen, a quarter over ICE-TCP), and two
# visitors a second who each stay 5 s: about 10 joins and leaves every 5 s for the whole run.
"$CARGO_TARGET_DIR/release/rtcd-loadtest" --url http://127.0.0.1:18045 --server-pid "$server" \
  --calls 4 --users-per-call 4 --unmuted 1 --screen --tcp-share 0.25 --churn 2 --visit 5 \
  --duration $((minutes * 60)) --warmup 2 --json "$out/report.json" >"$out/loadtest.txt" 2>&1 &
lt=$!

python3 - "$server" "$lt" "$sample" "$out" <<'PYEOF'
import csv, os, re, statistics, sys, time, urllib.request
server, lt, every, out = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
def alive(pid):
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
def sample():
    row = {"t": round(time.time() - t0, 1)}
    with open(f"/proc/{server}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                row["rss_kib"] = int(line.split()[1])
            if line.startswith("Threads:"):
                row["threads"] = int(line.split()[1])
    row["fds"] = len(os.listdir(f"/proc/{server}/fd"))
    text = urllib.request.urlopen("http://127.0.0.1:18045/metrics", timeout=5).read().decode()
    for m in re.finditer(r'^rtcd_(table_entries|engine_table_entries)\{([^}]*)\} (\S+)$', text, re.M):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        name = labels["table"] + (f"@{labels['shard']}" if "shard" in labels else "")
        row[name] = float(m.group(3))
    return row
t0 = time.time()
rows = []
while alive(lt):
    rows.append(sample())
    time.sleep(every)
# Everyone has left: every table back to zero (bearer token and idle tasks aside), the
# limiter's entries once their 60 s window has passed.
deadline = time.time() + 75
while True:
    end = sample()
    busy = {k: v for k, v in end.items() if k not in ("t", "rss_kib", "threads", "fds", "tokio_tasks", "auth_tokens") and v != 0
            and not (k == "http_addresses" and v <= 1)}
    if not busy or time.time() > deadline:
        break
    time.sleep(1)
keys = sorted({k for r in rows for k in r})
with open(f"{out}/samples.csv", "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=keys)
    w.writeheader()
    w.writerows(rows + [end])
bad = []
n = len(rows)
lines = [f"soak: {n} samples over {rows[-1]['t'] if rows else 0:.0f} s"]
if n >= 6:
    mid, last = rows[n // 3: 2 * n // 3], rows[2 * n // 3:]
    for k in ["rss_kib", "fds", "threads", "tokio_tasks"] + [k for k in keys if k not in ("t", "rss_kib", "fds", "threads", "tokio_tasks")]:
        a = max((r.get(k, 0) for r in mid), default=0)
        b = max((r.get(k, 0) for r in last), default=0)
        ma = statistics.median_high([r.get(k, 0) for r in mid])
        mb = statistics.median_high([r.get(k, 0) for r in last])
        slack = 2048 if k == "rss_kib" else 4
        # Growth is a level that keeps rising: both the peak and the median of the last third
        # above the middle third's. A lone peak (timers of a burst of retransmissions) is churn.
        grew = b > a * 1.10 + slack and mb > ma * 1.10 + slack
        lines.append(f"  {k:36} middle third max {a:>10.0f} median {ma:>10.0f}   last third max {b:>10.0f} median {mb:>10.0f}   {'GROWS' if grew else 'flat'}")
        if grew:
            bad.append(k)
else:
    bad.append("too few samples")
lines.append("  after everyone left: " + ("every table at zero" if not busy else f"NOT zero: {busy}"))
if busy:
    bad.append("tables not back to zero")
lines.append("soak: " + ("PASS" if not bad else f"FAIL ({', '.join(bad)})"))
open(f"{out}/summary.txt", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
sys.exit(1 if bad else 0)
PYEOF
