#!/usr/bin/env bash
# Runs the Go compatibility tests (this directory) against one rtcd server
# binary, inside a fresh network namespace that has only loopback.
#
#   e2e/compat/run.sh <path-to-server-binary> <label>
#
# Works for the reference Mattermost rtcd (see build-ref.sh) and for rtcd-rs:
# both are configured only through RTCD_* environment variables. Needs root
# (unshare -n). The compiled test binary is cached under
# $HOME/.cache/rtcd-rs/go-bin/ keyed by a hash of this module's sources.
#
# Optional environment:
#   COMPAT_RUN       -test.run regexp (default: all tests)
#   COMPAT_SKIP      checks to skip, comma-separated: vad, dc
#   COMPAT_KEEP=1    keep the run directory (logs, store) even on success
#   COMPAT_FAULT_USER  a user ID: the server panics in that user's session
#                    (RTCD_FAULT_PANIC_USER; only rtcd-rs built with the
#                    fault-injection feature), and TestPanicContained runs
#   COMPAT_SERVER_ENV  extra NAME=value settings for the server, space-separated
#   COMPAT_HOSTILE=1 run TestHostile (rtcd-rs only; needs the small limits scripts/compat.sh
#                    sets through COMPAT_SERVER_ENV)
#   RTCD_HTTP_PORT   API port inside the namespace (default 8045)
#   RTCD_ICE_PORT    ICE UDP/TCP port inside the namespace (default 8443)
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
if ! command -v go >/dev/null 2>&1; then
	export PATH="$PATH:/usr/local/go/bin"
fi

# 1. Compiled test binary, cached by a hash of the module's sources.
test_bin="$("$here/build-test.sh")"

# 2. Run directory: store, logs, inner script.
run_dir="$(mktemp -d "${TMPDIR:-/tmp}/rtcd-compat-$label.XXXXXX")"
admin_key="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
http_port="${RTCD_HTTP_PORT:-8045}"
ice_port="${RTCD_ICE_PORT:-8443}"

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
	${COMPAT_FAULT_USER:+RTCD_FAULT_PANIC_USER="$COMPAT_FAULT_USER"} \
	${COMPAT_SERVER_ENV:-} \
	"$SERVER_BIN" >"$RUN_DIR/server.log" 2>&1 &
server_pid=$!

stop_server() {
	kill -TERM "$server_pid" 2>/dev/null || return 0
	for _ in $(seq 1 50); do
		kill -0 "$server_pid" 2>/dev/null || { wait "$server_pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	echo "run: server did not exit within 5s of SIGTERM, killing" >&2
	kill -KILL "$server_pid" 2>/dev/null
	wait "$server_pid" 2>/dev/null
	return 0
}

# Wait (bounded) for GET /version to answer 200.
. "$E2E_LIB/wait-version.sh"
if ! wait_for_version "$HTTP_PORT" "$server_pid"; then
	echo "run: server not ready (GET /version) within 10s" >&2
	stop_server
	exit 90
fi

test_args=(-test.v -test.timeout=180s -test.count=1)
if [[ -n "${COMPAT_RUN:-}" ]]; then
	test_args+=("-test.run=$COMPAT_RUN")
fi
t0=$(date +%s%N)
RTCD_URL="http://127.0.0.1:$HTTP_PORT" RTCD_ADMIN_KEY="$ADMIN_KEY" COMPAT_SKIP="${COMPAT_SKIP:-}" \
	COMPAT_FAULT_USER="${COMPAT_FAULT_USER:-}" COMPAT_LABEL="$LABEL" COMPAT_SERVER_LOG="$RUN_DIR/server.log" \
	COMPAT_HOSTILE="${COMPAT_HOSTILE:-}" RTCD_ICE_PORT="$ICE_PORT" COMPAT_SERVER_BIN="$SERVER_BIN" \
	"$TEST_BIN" "${test_args[@]}" 2>&1 | tee "$RUN_DIR/test.log"
status=${PIPESTATUS[0]}
t1=$(date +%s%N)
echo "run: tests took $(( (t1 - t0) / 1000000 )) ms" >&2
stop_server
exit "$status"
INNER

echo "run: [$label] server=$server_bin test=$test_bin dir=$run_dir" >&2
set +e
RUN_DIR="$run_dir" SERVER_BIN="$server_bin" TEST_BIN="$test_bin" ADMIN_KEY="$admin_key" LABEL="$label" \
	HTTP_PORT="$http_port" ICE_PORT="$ice_port" COMPAT_RUN="${COMPAT_RUN:-}" COMPAT_SKIP="${COMPAT_SKIP:-}" \
	COMPAT_FAULT_USER="${COMPAT_FAULT_USER:-}" COMPAT_SERVER_ENV="${COMPAT_SERVER_ENV:-}" \
	COMPAT_HOSTILE="${COMPAT_HOSTILE:-}" E2E_LIB="$(cd "$(dirname "${BASH_SOURCE[0]}")/../lib" && pwd)" unshare -n bash "$run_dir/inner.sh"
status=$?
set -e

if [[ $status -ne 0 ]]; then
	echo "run: [$label] FAILED (exit $status); last 60 lines of $run_dir/server.log:" >&2
	tail -n 60 "$run_dir/server.log" >&2 || true
	echo "run: [$label] logs kept in $run_dir" >&2
elif [[ "${COMPAT_KEEP:-}" == 1 ]]; then
	echo "run: [$label] PASS; logs kept in $run_dir" >&2
else
	rm -rf "$run_dir"
	echo "run: [$label] PASS" >&2
fi
exit "$status"
