#!/bin/sh
# relayd post-remove: a purge leaves the state directory (grants and queued
# mail) in place, and says so.
set -e
root=${DPKG_ROOT:-}
if [ "${1:-}" = purge ] && [ -d "$root/var/lib/relayd" ]; then
	echo "relayd purged: /var/lib/relayd (grants and any queued mail) is left in place; remove it yourself once you no longer need it"
fi
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
