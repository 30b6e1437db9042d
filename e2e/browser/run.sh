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
#   camera   page A's fake camera (VideoOn, VP8) decoded by page B
#   camera-av1  A and B join with av1Support, A's camera goes out as AV1 plus
#            a VP8 fallback; B decodes AV1, page C (no av1Support) VP8
#   screen   A shares a canvas "screen" with simulcast l/h; B runs in a second
#            network namespace behind a veth (198.18.0.1 <-> 198.18.0.2), and a
#            tc tbf limit on the server side of the veth moves B to l; lifted,
#            B must return to h
#   loss     camera, with 5% of the UDP towards B dropped (nftables, on the
#            veth); B keeps decoding and sends NACKs
#   werift   A's simulcast screen share viewed by a werift peer (Node,
#            werift-viewer.mjs) in B's namespace, started through netns-b.sh;
#            a random 15% drop (or tbf) towards it for 8 s forces a
#            down-switch; its RTP log must show one SSRC and continuous
#            seq/timestamp/PictureID across switches (labels with "ref": log only)
#   firstframe  A (joined muted) unmutes, turns its camera and its simulcast screen on and
#            off; B's first audio and first decoded frame are timed from A's action
#            (firstframe.mjs); prints "FIRSTFRAME {json}" for scripts/browser.sh
# Every scenario but audio ends with "PASS [label] <scenario> (..)" or
# "FAIL [label] <scenario> ..".
#
# Works for the reference Mattermost rtcd (e2e/compat/build-ref.sh) and for
# rtcd-rs: both are configured only through RTCD_* environment variables.
# Needs root (unshare -n). Runs setup.sh first (idempotent installs).
#
# Optional environment:
#   BROWSER_E2E_KEEP=1    keep the run directory (logs) even on success
#   E2E_SERVER_ENV        extra NAME=value settings for the server, space-separated
#                         (e.g. RTCD_RTC_ENGINESHARDS=1)
#   E2E_STATS_SECONDS     how long to sample getStats at most (default 20)
#   E2E_FAKE_AUDIO        wav (default: 440 Hz sine file) or default (built-in beep)
#   RTCD_HTTP_PORT        API port inside the namespace (default 8045)
#   RTCD_ICE_PORT         ICE UDP/TCP port inside the namespace (default 8443)
#   RELAY_PORT            relay HTTP/WS port inside the namespace (default 8099)
#   E2E_SCENARIO          scenario when no third argument is given
set -euo pipefail

if [[ $# -lt 2 || $# -gt 3 ]]; then
	echo "usage: $0 <path-to-server-binary> <label> [audio|ice-tcp|turn|mixed|camera|camera-av1|screen|loss|werift|firstframe]" >&2
	exit 2
fi
server_bin="$(readlink -f "$1")"
label="$2"
scenario="${3:-${E2E_SCENARIO:-audio}}"
case "$scenario" in
audio | ice-tcp | turn | mixed | camera | camera-av1 | screen | loss | werift | firstframe) ;;
*) echo "run: unknown scenario $scenario (audio, ice-tcp, turn, mixed, camera, camera-av1, screen, loss, werift, firstframe)" >&2; exit 2 ;;
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

# screen, loss, werift: page B's Chromium (werift: the werift viewer) lives in a second network namespace, held
# by a sleeping process, joined to this one by a veth pair: e2e-s here
# (198.18.0.1/30, where rtcd, its ICE ports and the relay are also reachable)
# and e2e-b there (198.18.0.2/30, plus its own lo). 198.18.0.0/15 is the
# benchmarking range; both ends exist only inside these namespaces. test.mjs
# shapes e2e-s (B's downlink): tc tbf (screen), nftables loss (loss). The
# interfaces are up before the server starts, so rtcd has a candidate on each.
b_holder_pid=""
b_env=()
if [[ "$SCENARIO" == screen || "$SCENARIO" == loss || "$SCENARIO" == werift ]]; then
	unshare -n sleep 600 &
	b_holder_pid=$!
	b_ns="/proc/$b_holder_pid/ns/net"
	for _ in $(seq 1 50); do # until the holder is in its own namespace
		[[ "$(readlink "$b_ns" 2>/dev/null)" != "$(readlink /proc/self/ns/net)" ]] && break
		sleep 0.05
	done
	if ! { ip link add e2e-s type veth peer name e2e-b &&
		ip link set e2e-b netns "$b_holder_pid" &&
		ip addr add 198.18.0.1/30 dev e2e-s && ip link set e2e-s up &&
		nsenter --net="$b_ns" ip link set lo up &&
		nsenter --net="$b_ns" ip addr add 198.18.0.2/30 dev e2e-b &&
		nsenter --net="$b_ns" ip link set e2e-b up; }; then
		echo "run: could not set up B's namespace and the veth pair" >&2
		kill "$b_holder_pid" 2>/dev/null
		exit 93
	fi
	for _ in $(seq 1 30); do
		ip -o link show e2e-s | grep -q 'state UP' && break
		sleep 0.1
	done
	printf '#!/bin/sh\n# Chromium for page B, inside B'"'"'s network namespace.\nexec nsenter --net=%s -- /usr/bin/chromium "$@"\n' "$b_ns" >"$RUN_DIR/chromium-b.sh"
	chmod +x "$RUN_DIR/chromium-b.sh"
	# werift: any command (the werift viewer's node) inside B's namespace.
	printf '#!/bin/sh\n# A command inside B'"'"'s network namespace.\nexec nsenter --net=%s -- "$@"\n' "$b_ns" >"$RUN_DIR/netns-b.sh"
	chmod +x "$RUN_DIR/netns-b.sh"
	b_env=(E2E_B_CHROMIUM="$RUN_DIR/chromium-b.sh" E2E_B_NETNS_EXEC="$RUN_DIR/netns-b.sh" E2E_B_RELAY_URL="http://198.18.0.1:$RELAY_PORT" E2E_SHAPE_DEV=e2e-s)
	echo "run: page B's namespace (holder pid $b_holder_pid): e2e-b 198.18.0.2/30 <-> e2e-s 198.18.0.1/30 here" >&2
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
	RTCD_LOGGER_CONSOLELEVEL="${E2E_SERVER_LOG_LEVEL:-DEBUG}" \
	${E2E_SERVER_ENV:-} \
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
	stop_pid "$b_holder_pid" "B's namespace holder"
}

# Wait (bounded) for GET /version to answer 200.
. "$E2E_LIB/wait-version.sh"
if ! wait_for_version "$HTTP_PORT" "$server_pid"; then
	echo "run: server not ready (GET /version) within 10s" >&2
	cleanup
	exit 90
fi

turn_env=()
if [[ "$SCENARIO" == turn ]]; then
	turn_env=(TURN_URL="turn:127.0.0.1:3478" TURN_SECRET="$TURN_SECRET")
fi
relay_addr="127.0.0.1:$RELAY_PORT"
if [[ -n "$b_holder_pid" ]]; then
	relay_addr="0.0.0.0:$RELAY_PORT" # lo and e2e-s: pages A (127.0.0.1) and B (198.18.0.1)
fi
env "${turn_env[@]}" RTCD_URL="http://127.0.0.1:$HTTP_PORT" RTCD_ADMIN_KEY="$ADMIN_KEY" RELAY_ADDR="$relay_addr" \
	RELAY_CLIENT_ID="$RELAY_CLIENT_ID" RELAY_AUTH_KEY="$RELAY_AUTH_KEY" \
	node "$HERE/relay.mjs" >"$RUN_DIR/relay.log" 2>&1 &
relay_pid=$!

t0=$(date +%s%N)
# Playwright's pw:browser debug channel carries Chromium's stdout/stderr.
env "${b_env[@]}" E2E_LABEL="$LABEL" \
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
RUN_DIR="$run_dir" SERVER_BIN="$server_bin" ADMIN_KEY="$admin_key" HERE="$here" SCENARIO="$scenario" LABEL="$label" \
	RELAY_CLIENT_ID="$relay_client_id" RELAY_AUTH_KEY="$relay_auth_key" TURN_SECRET="$turn_secret" \
	COMPAT_TEST_BIN="$compat_test_bin" \
	HTTP_PORT="${RTCD_HTTP_PORT:-8045}" ICE_PORT="${RTCD_ICE_PORT:-8443}" RELAY_PORT="${RELAY_PORT:-8099}" \
	E2E_STATS_SECONDS="${E2E_STATS_SECONDS:-20}" E2E_FAKE_AUDIO="${E2E_FAKE_AUDIO:-wav}" \
	E2E_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)" unshare -n bash "$run_dir/inner.sh"
status=$?
set -e
took="$(( ($(date +%s%N) - t_start) / 1000000 )) ms"

if [[ $status -ne 0 ]]; then
	logs=(server.log relay.log browser.log chromium.log)
	case "$scenario" in
	ice-tcp) logs+=(nft.log) ;;
	turn) logs+=(turn.log) ;;
	mixed) logs+=(pion.log) ;;
	werift) logs+=(werift.log) ;;
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
