#!/usr/bin/env bash
# Browser end-to-end test: two headless Chromium pages join one call on an
# rtcd server through relay.mjs (a stand-in for the Calls plugin), and each
# must receive the other's audio (getStats inbound-rtp packets growing,
# audioLevel > 0). Everything runs inside `unshare -n` with only loopback.
#
#   e2e/browser/run.sh <path-to-server-binary> <label> [scenario]
#
# Scenarios (third argument, or E2E_SCENARIO; default audio), see test.mjs:
#   audio    two pages, audio both ways; last line "PASS [label] browser e2e (..)"
#   ice-tcp  the same with all UDP dropped in the namespace (nftables input
#            hook), so media must flow over ICE-TCP (RTCD_RTC_ICEPORTTCP)
#   turn     the same through coturn on 127.0.0.1:3478 (TURN REST secret)
#            with iceTransportPolicy "relay"
#   mixed    one page and one pion peer (e2e/compat TestMixedPeer) in a call
# Every scenario but audio ends with "PASS [label] <scenario> (..)" or
# "FAIL [label] <scenario> ..".
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
#   E2E_SCENARIO          scenario when no third argument is given
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
	echo "usage: $0 <path-to-server-binary> <label> [audio|ice-tcp|turn|mixed]" >&2
	exit 2
fi
server_bin="$(readlink -f "$1")"
label="$2"
scenario="${3:-${E2E_SCENARIO:-audio}}"
case "$scenario" in
audio | ice-tcp | turn | mixed) ;;
*) echo "run: unknown scenario $scenario (audio, ice-tcp, turn, mixed)" >&2; exit 2 ;;
esac
[[ -x "$server_bin" ]] || { echo "run: $1 is not an executable file" >&2; exit 2; }
[[ "$label" =~ ^[A-Za-z0-9._-]+$ ]] || { echo "run: label must match [A-Za-z0-9._-]+" >&2; exit 2; }
if [[ $(id -u) -ne 0 ]]; then
	echo "run: needs root for unshare -n" >&2
	exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/setup.sh" "$scenario"

compat_test_bin=""
if [[ "$scenario" == mixed ]]; then
	compat_test_bin="$("$here/../compat/build-test.sh")"
fi

if [[ "$scenario" == audio ]]; then
	run_dir="$(mktemp -d "${TMPDIR:-/tmp}/rtcd-browser-$label.XXXXXX")"
	title="browser e2e"
else
	run_dir="$(mktemp -d "${TMPDIR:-/tmp}/rtcd-browser-$label-$scenario.XXXXXX")"
	title="$scenario"
fi
admin_key="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
# The relay's client id (26 chars, like a Mattermost id) and auth key; the
# pion peer of "mixed" connects with them too.
relay_client_id="$(head -c 13 /dev/urandom | od -An -tx1 | tr -d ' \n')"
relay_auth_key="$(head -c 20 /dev/urandom | od -An -tx1 | tr -d ' \n')"
turn_secret="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"

cat > "$run_dir/inner.sh" <<'INNER'
set -uo pipefail
ip link set lo up

cd "$RUN_DIR"
turn_pid=""
if [[ "$SCENARIO" == ice-tcp ]]; then
	# Drop every UDP packet in this namespace (on input, so senders see no
	# error, as behind a firewall): ICE must use the server's passive TCP
	# candidates. The counter shows how much UDP was dropped.
	if ! PATH="$PATH:/usr/sbin:/sbin" nft -f - <<'NFT'
table inet e2e_block_udp {
	chain input {
		type filter hook input priority 0; policy accept;
		meta l4proto udp counter drop
	}
}
NFT
	then
		echo "run: nft could not install the UDP drop rule (netfilter unavailable?)" >&2
		exit 91
	fi
	echo "run: all UDP dropped in the namespace (nftables inet e2e_block_udp)" >&2
fi
if [[ "$SCENARIO" == turn ]]; then
	# coturn with TURN REST credentials (use-auth-secret), UDP/TCP on
	# 127.0.0.1:3478, relay ports 49160-49200 on 127.0.0.1; rtcd is on
	# loopback, hence allow-loopback-peers.
	turnserver -n --listening-ip=127.0.0.1 --listening-port=3478 --relay-ip=127.0.0.1 \
		--min-port=49160 --max-port=49200 --use-auth-secret --static-auth-secret="$TURN_SECRET" \
		--realm=rtcd-e2e --verbose --no-tls --no-dtls --no-cli --allow-loopback-peers --no-multicast-peers \
		--log-file="$RUN_DIR/turn.log" --simple-log --no-stdout-log --pidfile="$RUN_DIR/turnserver.pid" \
		--userdb="$RUN_DIR/turndb" >"$RUN_DIR/turn.stdout" 2>&1 &
	turn_pid=$!
	turn_ready=0
	for _ in $(seq 1 50); do
		kill -0 "$turn_pid" 2>/dev/null || break
		if ss -Hlnu 'sport = :3478' | grep -q 127.0.0.1; then
			turn_ready=1
			break
		fi
		sleep 0.1
	done
	if [[ $turn_ready -ne 1 ]]; then
		echo "run: turnserver not listening on 127.0.0.1:3478 within 5s" >&2
		kill -TERM "$turn_pid" 2>/dev/null
		exit 92
	fi
	echo "run: coturn (turnserver) listening on 127.0.0.1:3478" >&2
fi

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
	stop_pid "$turn_pid" turnserver
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

turn_env=()
if [[ "$SCENARIO" == turn ]]; then
	turn_env=(TURN_URL="turn:127.0.0.1:3478" TURN_SECRET="$TURN_SECRET")
fi
env "${turn_env[@]}" RTCD_URL="http://127.0.0.1:$HTTP_PORT" RTCD_ADMIN_KEY="$ADMIN_KEY" RELAY_ADDR="127.0.0.1:$RELAY_PORT" \
	RELAY_CLIENT_ID="$RELAY_CLIENT_ID" RELAY_AUTH_KEY="$RELAY_AUTH_KEY" \
	node "$HERE/relay.mjs" >"$RUN_DIR/relay.log" 2>&1 &
relay_pid=$!

t0=$(date +%s%N)
# Playwright's pw:browser debug channel carries Chromium's stdout/stderr.
RELAY_URL="http://127.0.0.1:$RELAY_PORT" RUN_DIR="$RUN_DIR" DEBUG=pw:browser E2E_SCENARIO="$SCENARIO" \
	RTCD_URL="http://127.0.0.1:$HTTP_PORT" COMPAT_TEST_BIN="$COMPAT_TEST_BIN" \
	RELAY_CLIENT_ID="$RELAY_CLIENT_ID" RELAY_AUTH_KEY="$RELAY_AUTH_KEY" \
	timeout -k 5 120 node "$HERE/test.mjs" 2>"$RUN_DIR/chromium.log" | tee "$RUN_DIR/test.log"
status=${PIPESTATUS[0]}
t1=$(date +%s%N)
echo "run: browser test took $(( (t1 - t0) / 1000000 )) ms" >&2
cleanup
if [[ "$SCENARIO" == ice-tcp ]]; then
	PATH="$PATH:/usr/sbin:/sbin" nft list table inet e2e_block_udp >"$RUN_DIR/nft.log" 2>&1
	echo "run: UDP drop rule: $(grep -o 'counter packets [0-9]* bytes [0-9]*' "$RUN_DIR/nft.log")" >&2
fi
if [[ "$SCENARIO" == turn ]]; then
	echo "run: coturn log: $(grep -c 'ALLOCATE processed, success' "$RUN_DIR/turn.log" 2>/dev/null) successful allocations, $(grep -c 'CREATE_PERMISSION processed, success' "$RUN_DIR/turn.log" 2>/dev/null) permissions" >&2
fi
exit "$status"
INNER

if [[ "$scenario" == audio ]]; then
	echo "run: [$label] server=$server_bin dir=$run_dir" >&2
else
	echo "run: [$label] scenario=$scenario server=$server_bin dir=$run_dir" >&2
fi
t_start=$(date +%s%N)
set +e
RUN_DIR="$run_dir" SERVER_BIN="$server_bin" ADMIN_KEY="$admin_key" HERE="$here" SCENARIO="$scenario" \
	RELAY_CLIENT_ID="$relay_client_id" RELAY_AUTH_KEY="$relay_auth_key" TURN_SECRET="$turn_secret" \
	COMPAT_TEST_BIN="$compat_test_bin" \
	HTTP_PORT="${RTCD_HTTP_PORT:-8045}" ICE_PORT="${RTCD_ICE_PORT:-8443}" RELAY_PORT="${RELAY_PORT:-8099}" \
	E2E_STATS_SECONDS="${E2E_STATS_SECONDS:-20}" E2E_FAKE_AUDIO="${E2E_FAKE_AUDIO:-wav}" \
	unshare -n bash "$run_dir/inner.sh"
status=$?
set -e
took="$(( ($(date +%s%N) - t_start) / 1000000 )) ms"

if [[ $status -ne 0 ]]; then
	logs=(server.log relay.log browser.log chromium.log)
	case "$scenario" in
	ice-tcp) logs+=(nft.log) ;;
	turn) logs+=(turn.log) ;;
	mixed) logs+=(pion.log) ;;
	esac
	for f in "${logs[@]}"; do
		echo "run: ---- last 40 lines of $run_dir/$f ----" >&2
		tail -n 40 "$run_dir/$f" >&2 2>/dev/null || echo "(missing)" >&2
	done
	echo "run: [$label] logs kept in $run_dir" >&2
	echo "FAIL [$label] $title (exit $status, $took)"
	exit 1
fi
if [[ "${BROWSER_E2E_KEEP:-}" == 1 ]]; then
	echo "run: [$label] logs kept in $run_dir" >&2
else
	rm -rf "$run_dir"
fi
echo "PASS [$label] $title ($took)"
exit 0
