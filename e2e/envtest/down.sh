#!/usr/bin/env bash
# Stop a stack started by up.sh: signal exactly the PIDs recorded in RUN/pids, never anything found by name.
# Order: the API clients (kwok, scheduler, controller-manager), then kube-apiserver, then etcd; each tier gets
# TERM, then KILL for whatever is left after 5 s. Then RUN and the etcd data dir are removed.
#   down.sh [--keep] RUN      (--keep: leave RUN, e.g. for its logs)
set -uo pipefail
KEEP=0
if [ "${1:-}" = --keep ]; then KEEP=1; shift; fi
RUN=${1:?usage: down.sh [--keep] RUN}
[ -d "$RUN" ] || { echo "envtest: no such run dir $RUN" >&2; exit 0; }

declare -A NAME=()
if [ -f "$RUN/pids" ]; then
  while read -r pid name; do
    [[ "$pid" =~ ^[0-9]+$ ]] || continue
    # guard against PID reuse: only signal the process if it still runs the binary we started
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || continue
    case "$exe" in */"$name"|*/"$name"" (deleted)") NAME[$pid]=$name ;; esac
  done <"$RUN/pids"
fi

running() { # a zombie (exited, not yet reaped by whoever inherited it) counts as stopped
  kill -0 "$1" 2>/dev/null && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null
}
stop_tier() { # pids...
  local pid i left
  [ $# -gt 0 ] || return 0
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
  for ((i = 0; i < 50; i++)); do
    left=0; for pid in "$@"; do running "$pid" && left=1; done
    [ "$left" = 0 ] && return 0
    sleep 0.1
  done
  for pid in "$@"; do
    if running "$pid"; then echo "envtest: KILL $pid ${NAME[$pid]}" >&2; kill -KILL "$pid" 2>/dev/null; fi
  done
}
clients=(); api=(); etcd=()
for pid in "${!NAME[@]}"; do
  case "${NAME[$pid]}" in kube-apiserver) api+=("$pid") ;; etcd) etcd+=("$pid") ;; *) clients+=("$pid") ;; esac
done
stop_tier "${clients[@]}"
stop_tier "${api[@]}"
stop_tier "${etcd[@]}"
: >"$RUN/pids"

if [ -f "$RUN/etcd-dir" ]; then
  d=$(cat "$RUN/etcd-dir")
  case "$d" in /dev/shm/rtcd-envtest-etcd.*|"$RUN"/*) rm -rf "$d" ;; esac
fi
if [ "$KEEP" = 0 ]; then rm -rf "$RUN"; fi
