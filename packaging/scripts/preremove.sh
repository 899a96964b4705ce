#!/bin/sh
# relayd pre-remove: stop the service on removal (not on upgrade).
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
	case "${1:-}" in
	remove|0) systemctl disable --now relayd.service relayd-imap.socket relayd-smtp.socket >/dev/null 2>&1 || true ;;
	esac
fi
exit 0
