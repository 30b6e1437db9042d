#!/usr/bin/env bash
# Browser end-to-end test: two headless Chromium pages join one call on an
# rtcd server through relay.mjs (a stand-in for the Calls plugin), and each
# must receive the other's audio (getStats inbound-rtp packets growing,
# audioLevel > 0). Everything runs inside `unshare -n` with only loopback.
#
#   e2e/browser/run.sh <path-to-server-binary> <label>
#
# Works for the reference Mattermost rtcd (e2e/compat/build-ref.sh) and for
# rtcd-rs: both are configured only through RTCD_* environment variables.
# Needs root (unshare -n). Runs setup.sh first (idempotent installs).
#
# Optional environment:
#   BROWSER_E2E_KEEP=1    keep the run directory (logs) even on success
#   E2E_STATS_SECONDS     how long to sample getStats at most (default 20)
#   E2E_FAKE_AUDIO        wav (default: 440 Hz sine file) or default (built-in beep)
#   RTCD_HTTP_PORT        API port inside the namespace (default 8045)
#   RTCD_ICE_PORT         ICE UDP/TCP port inside the namespace (default 8443)
#   RELAY_PORT            relay HTTP/WS port inside the namespace (default 8099)
set -euo pipefail

if [[ $# -ne 2 ]]; then
	echo "usage: $0 <path-to-server-binary> <label>" >&2
	exit 2
fi
server_bin="$(readlink -f "$1")"
label="$2"
[[ -x "$server_bin" ]] || { echo "run: $1 is not an executable file" >&2; exit 2; }
[[ "$label" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "run: label must match [A-Za-z0-9._-]+" >&2; exit 2; }
if [[ $(id -u) -ne 0 ]]; then
	echo "run: needs root for unshare -n" >&2
	exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh"

run_dir="$(mktemp -d "${TMPDIR:-/tmp}/rtcd-browser-$label.XXXXXX")"
admin_key="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cat > "$run_dir/inner.sh" <<'INNER'
set -uo pipefail
ip link set lo up

cd "$RUN_DIR"
env -i PATH="$PATH" HOME="$HOME" \
	RTCD_API_HTTP_LISTENADDRESS="127.0.0.1:$HTTP_PORT" \
	RTCD_API_SECURITY_ENABLEADMIN=true \
	RTCD_API_SECURITY_ADMINSECRETKEY="$ADMIN_KEY" \
	RTCD_API_SECURITY_ALLOWSELFREGISTRATION=true \
	RTCD_RTC_ICEPORTUDP="$ICE_PORT" \
	RTCD_RTC_ICEPORTTCP="$ICE_PORT" \
	RTCD_STORE_DATASOURCE="$RUN_DIR/store" \
	RTCD_LOGGER_ENABLEFILE=false \
	RTCD_LOGGER_ENABLECONSOLE=true \
	RTCD_LOGGER_CONSOLELEVEL=DEBUG \
	"$SERVER_BIN" >"$RUN_DIR/server.log" 2>&1 &
server_pid=$!
relay_pid=""

stop_pid() { # pid name
	local pid="$1"
	[[ -n "$pid" ]] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for _ in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	echo "run: $2 did not exit within 5s of SIGTERM, killing" >&2
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}
cleanup() {
	stop_pid "$relay_pid" relay
	stop_pid "$server_pid" server
}

# Wait (bounded) for GET /version to answer 200.
ready=0
for _ in $(seq 1 100); do
	if ! kill -0 "$server_pid" 2>/dev/null; then
		echo "run: server exited during startup" >&2
		break
	fi
	if { exec 3<>"/dev/tcp/127.0.0.1/$HTTP_PORT"; } 2>/dev/null; then
		printf 'GET /version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		status_line=""
		read -r -t 2 status_line <&3 || true
		exec 3<&- 3>&-
		if [[ "$status_line" == *" 200 "* ]]; then
			ready=1
			break
		fi
	fi
	sleep 0.1
done
if [[ $ready -ne 1 ]]; then
	echo "run: server not ready (GET /version) within 10s" >&2
	cleanup
	exit 90
fi

RTCD_URL="http://127.0.0.1:$HTTP_PORT" RTCD_ADMIN_KEY="$ADMIN_KEY" RELAY_ADDR="127.0.0.1:$RELAY_PORT" \
	node "$HERE/relay.mjs" >"$RUN_DIR/relay.log" 2>&1 &
relay_pid=$!

t0=$(date +%s%N)
# Playwright's pw:browser debug channel carries Chromium's stdout/stderr.
RELAY_URL="http://127.0.0.1:$RELAY_PORT" RUN_DIR="$RUN_DIR" DEBUG=pw:browser \
	timeout -k 5 120 node "$HERE/test.mjs" 2>"$RUN_DIR/chromium.log" | tee "$RUN_DIR/test.log"
status=${PIPESTATUS[0]}
t1=$(date +%s%N)
echo "run: browser test took $(( (t1 - t0) / 1000000 )) ms" >&2
cleanup
exit "$status"
INNER

echo "run: [$label] server=$server_bin dir=$run_dir" >&2
t_start=$(date +%s%N)
set +e
RUN_DIR="$run_dir" SERVER_BIN="$server_bin" ADMIN_KEY="$admin_key" HERE="$here" \
	HTTP_PORT="${RTCD_HTTP_PORT:-8045}" ICE_PORT="${RTCD_ICE_PORT:-8443}" RELAY_PORT="${RELAY_PORT:-8099}" \
	E2E_STATS_SECONDS="${E2E_STATS_SECONDS:-20}" E2E_FAKE_AUDIO="${E2E_FAKE_AUDIO:-wav}" \
	unshare -n bash "$run_dir/inner.sh"
status=$?
set -e
took="$(( ($(date +%s%N) - t_start) / 1000000 )) ms"

if [[ $status -ne 0 ]]; then
	for f in server.log relay.log browser.log chromium.log; do
		echo "run: ---- last 40 lines of $run_dir/$f ----" >&2
		tail -n 40 "$run_dir/$f" >&2 2>/dev/null || echo "(missing)" >&2
	done
	echo "run: [$label] logs kept in $run_dir" >&2
	echo "FAIL [$label] browser e2e (exit $status, $took)"
	exit 1
fi
if [[ "${BROWSER_E2E_KEEP:-}" == 1 ]]; then
	echo "run: [$label] logs kept in $run_dir" >&2
else
	rm -rf "$run_dir"
fi
echo "PASS [$label] browser e2e ($took)"
exit 0
