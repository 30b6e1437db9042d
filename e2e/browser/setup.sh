#!/usr/bin/env bash
# Installs what the browser e2e test needs, idempotently:
#   - Debian's chromium (only if /usr/bin/chromium is missing; needs root)
#   - the npm packages pinned in package-lock.json, into ./node_modules
#     (npm ci; skipped when node_modules already matches the lock file).
#   - per scenario named on the command line (run.sh passes its scenario):
#       ice-tcp  Debian's nftables (/usr/sbin/nft), to drop UDP in the namespace
#       turn     Debian's coturn (/usr/bin/turnserver); its service is never
#                started (run.sh runs turnserver itself, inside the namespace)
#       screen   iproute2 (ip, tc: the veth to B's namespace, the tbf limit) and
#                util-linux (nsenter: B's Chromium in its namespace)
#       loss     the same, and nftables (the 5% UDP drop towards B; this
#                kernel has no netem qdisc)
#       werift   the same as loss (the veth and namespace of the werift viewer,
#                its nftables drop or tc tbf limit); werift itself is one of
#                the npm packages (pinned 0.24.4: 0.25 needs node >= 22)
# playwright-core never downloads a browser: the test drives /usr/bin/chromium.
#
#   setup.sh [scenario...]
set -euo pipefail

apt_updated=0
apt_install() { # <command that must exist afterwards> <debian package>
	command -v "$1" >/dev/null 2>&1 && return 0
	if [[ $(id -u) -ne 0 ]]; then
		echo "setup: $1 is missing and installing $2 needs root" >&2
		exit 1
	fi
	echo "setup: installing Debian $2" >&2
	local t0
	t0=$(date +%s)
	if [[ $apt_updated -eq 0 ]]; then
		nice -n 10 apt-get update -q
		apt_updated=1
	fi
	DEBIAN_FRONTEND=noninteractive nice -n 10 apt-get install -y -q --no-install-recommends "$2"
	command -v "$1" >/dev/null 2>&1 || { echo "setup: $2 installed but $1 not found" >&2; exit 1; }
	echo "setup: $2 installed in $(( $(date +%s) - t0 ))s" >&2
}

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"

if [[ ! -x /usr/bin/chromium ]]; then
	if [[ $(id -u) -ne 0 ]]; then
		echo "setup: /usr/bin/chromium is missing and installing it needs root" >&2
		exit 1
	fi
	echo "setup: installing Debian chromium" >&2
	t0=$(date +%s)
	nice -n 10 apt-get update -q
	DEBIAN_FRONTEND=noninteractive nice -n 10 apt-get install -y -q chromium
	echo "setup: chromium installed in $(( $(date +%s) - t0 ))s" >&2
fi

for scenario in "$@"; do
	case "$scenario" in
	ice-tcp) PATH="$PATH:/usr/sbin:/sbin" apt_install nft nftables ;;
	turn) apt_install turnserver coturn ;;
	screen) PATH="$PATH:/usr/sbin:/sbin" apt_install tc iproute2; apt_install nsenter util-linux ;;
	loss | werift) PATH="$PATH:/usr/sbin:/sbin" apt_install tc iproute2; apt_install nsenter util-linux
		PATH="$PATH:/usr/sbin:/sbin" apt_install nft nftables ;;
	*) ;;
	esac
done

command -v node >/dev/null 2>&1 || { echo "setup: node not found" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "setup: npm not found" >&2; exit 1; }

# npm ci writes node_modules/.package-lock.json; when it equals the
# committed lock (apart from the root entry) the install is current.
stamp=node_modules/.rtcd-e2e-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
	echo "setup: node_modules is current" >&2
else
	echo "setup: npm ci" >&2
	t0=$(date +%s)
	PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 nice -n 10 npm ci --no-audit --no-fund --loglevel=error
	echo "$want" > "$stamp"
	echo "setup: npm packages installed in $(( $(date +%s) - t0 ))s" >&2
fi
echo "setup: chromium $(/usr/lib/chromium/chromium --version 2>/dev/null || echo '?'); node $(node --version)" >&2
