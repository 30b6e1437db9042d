# Sourced by the e2e runners' in-namespace scripts.
#
# wait_for_version PORT PID: waits (bounded, 10 s) until GET /version on 127.0.0.1:PORT
# answers 200 while process PID is alive. Returns 0 when ready, 1 otherwise.
wait_for_version() {
	local port="$1" pid="$2" status_line
	for _ in $(seq 1 100); do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "run: server exited during startup" >&2
			return 1
		fi
		if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
			printf 'GET /version HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
			status_line=""
			read -r -t 2 status_line <&3 || true
			exec 3<&- 3>&-
			if [[ "$status_line" == *" 200 "* ]]; then
				return 0
			fi
		fi
		sleep 0.1
	done
	return 1
}
