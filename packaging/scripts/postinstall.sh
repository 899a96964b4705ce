#!/bin/sh
# relayd post-install: the relayd user and directories through
# systemd-sysusers and systemd-tmpfiles (honouring $DPKG_ROOT), then systemd
# learns the units. A first install does not start the service: accounts
# must be configured first. An upgrade restarts a running service (the
# spool stays readable across versions).
set -e
root=${DPKG_ROOT:-}
if [ -n "$root" ]; then
	systemd-sysusers --root="$root" relayd.conf || true
	systemd-tmpfiles --root="$root" --create relayd.conf || true
	exit 0
fi
systemd-sysusers relayd.conf || true
systemd-tmpfiles --create relayd.conf || true
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	# $1 is "configure" with the old version (deb) or 2 (rpm) on an upgrade.
	if [ -n "${2:-}" ] || [ "${1:-}" = 2 ]; then
		systemctl try-restart relayd.service || true
	fi
fi
if [ -z "${2:-}" ] && [ "${1:-}" != 2 ]; then
	echo "relayd installed. Configure /etc/relayd/relayd.toml, run 'relayd authorize NAME' for each account, then: systemctl enable --now relayd"
fi
exit 0
