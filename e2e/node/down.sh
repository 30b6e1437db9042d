#!/usr/bin/env bash
# Stop the real node of e2e/node/up.sh and remove what it made, even after a failure:
#   e2e/node/down.sh [--keep] NODE_RUN
# kubelet and kube-proxy first (so nothing recreates pods), then every pod through the CRI, then
# containerd, all by the PIDs recorded in NODE_RUN/pids. Then
# any process left in the node's cgroups or started for its containerd socket (shims) is killed,
# every mount under NODE_RUN is unmounted, and the node's cgroup directories are removed in every
# hierarchy. --keep keeps NODE_RUN (logs). Safe to run twice, and from outside the mount namespace.
set -uo pipefail
KEEP=0
if [ "${1:-}" = --keep ]; then KEEP=1; shift; fi
NR=${1:?usage: down.sh [--keep] NODE_RUN}
[ -d "$NR" ] || exit 0
NR=$(cd "$NR" && pwd)
log() { echo "node-down: $*" >&2; }
SOCK=$NR/containerd/containerd.sock

stop_pid() { # pid name
  local pid=$1 i
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null
  for ((i = 0; i < 50; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ] && return 0
    sleep 0.1
  done
  log "$2 ($pid) ignored TERM for 5 s: KILL"
  kill -KILL "$pid" 2>/dev/null
}
recorded() { awk -v n="$1" '$2==n{print $1}' "$NR/pids" 2>/dev/null; }

for name in kube-proxy kubelet; do
  for pid in $(recorded "$name"); do stop_pid "$pid" "$name"; done
done
if [ -S "$SOCK" ] && [ -n "$(recorded containerd)" ] && kill -0 "$(recorded containerd)" 2>/dev/null; then
  CRICTL=$(cat "$NR/node-bin" 2>/dev/null)/crictl; [ -x "$CRICTL" ] || CRICTL=
  if [ -n "$CRICTL" ]; then
    C=("$CRICTL" --config "$NR/crictl.yaml")
    timeout 60 "${C[@]}" stopp $(timeout 10 "${C[@]}" pods -q 2>/dev/null) >/dev/null 2>&1
    timeout 60 "${C[@]}" rmp -fa >/dev/null 2>&1
  fi
fi
for pid in $(recorded containerd); do stop_pid "$pid" containerd; done

# What is left: container processes (in the node's cgroups) and shims (started for our socket).
CG_ROOT=$(cat "$NR/cgroup-root" 2>/dev/null || true)
left() {
  [ -n "$CG_ROOT" ] && find /sys/fs/cgroup/*"$CG_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  local p
  for p in /proc/[0-9]*; do
    tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -qF -- "$SOCK" && echo "${p#/proc/}"
  done
}
for round in 1 2 3; do
  pids=$(left | sort -u)
  [ -z "$pids" ] && break
  [ "$round" = 1 ] && log "killing leftovers: $(echo $pids)"
  kill -KILL $pids 2>/dev/null
  sleep 0.5
done

# Mounts under NODE_RUN (volumes, rootfs, shm), deepest first.
awk -v r="$NR" '$5 == r || index($5, r "/") == 1 {print $5}' /proc/self/mountinfo | sort -r | while read -r m; do
  umount -l "$m" 2>/dev/null || log "could not unmount $m"
done
# The node's cgroups, deepest first, in every hierarchy.
if [ -n "$CG_ROOT" ]; then
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h${CG_ROOT#/}" ] || continue
    find "$h${CG_ROOT#/}" -depth -type d -exec rmdir {} + 2>/dev/null
    [ -d "$h${CG_ROOT#/}" ] && log "cgroup $h${CG_ROOT#/} not removed"
  done
fi
if [ $KEEP = 0 ]; then rm -rf "$NR" 2>/dev/null || log "could not remove $NR"; fi
exit 0
