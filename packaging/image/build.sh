#!/bin/sh
# build.sh BINARY IMAGE VERSION: relayd's container image, with buildah,
# FROM scratch (no registry needed): BINARY (static, CGO_ENABLED=0) as
# /usr/bin/relayd, the build host's CA certificates, a non-root user relayd
# (uid and gid 10001, passwd and group files written here), /etc/relayd
# (the example configuration, root:relayd 0640) and /var/lib/relayd as
# volumes, /run/relayd for the status socket. The image is in Docker's
# format, which, unlike OCI's, keeps the HEALTHCHECK: relayd status
# --alive, a liveness check that passes whatever the mailboxes' states.
# make image runs it; as a user other than root it runs itself again
# under buildah unshare. buildah honours CONTAINERS_STORAGE_CONF (the test
# builds into a storage of its own).
set -eu

bin=$1
image=$2
version=$3
uid=10001
certs=/etc/ssl/certs/ca-certificates.crt

if [ "$(id -u)" != 0 ]; then
	exec buildah unshare sh "$0" "$@"
fi
if [ ! -r "$certs" ]; then
	echo "build.sh: no $certs: install the Debian package ca-certificates" >&2
	exit 1
fi
here=$(dirname "$0")

ctr=$(buildah from --format docker scratch)
trap 'buildah rm "$ctr" >/dev/null' EXIT
root=$(buildah mount "$ctr")

install -d -m 0755 "$root/usr/bin" "$root/etc/ssl/certs" "$root/var/lib" "$root/run"
install -d -m 1777 "$root/tmp"
install -m 0755 "$bin" "$root/usr/bin/relayd"
install -m 0644 "$certs" "$root/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nrelayd:x:%d:%d:relayd mail relay:/var/lib/relayd:/sbin/nologin\n' "$uid" "$uid" >"$root/etc/passwd"
printf 'root:x:0:\nrelayd:x:%d:\n' "$uid" >"$root/etc/group"
printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
chmod 0644 "$root/etc/passwd" "$root/etc/group" "$root/etc/nsswitch.conf"
# As the package lays them out (tmpfiles.d/relayd.conf).
install -d -m 0750 -o 0 -g "$uid" "$root/etc/relayd"
install -m 0640 -o 0 -g "$uid" "$here/../../config.example.toml" "$root/etc/relayd/relayd.toml"
install -d -m 0700 -o "$uid" -g "$uid" "$root/var/lib/relayd" "$root/var/lib/relayd/queue"
install -d -m 0751 -o "$uid" -g "$uid" "$root/run/relayd"
buildah umount "$ctr" >/dev/null

buildah config \
	--user "$uid:$uid" \
	--entrypoint '["/usr/bin/relayd"]' \
	--cmd '["serve", "-c", "/etc/relayd/relayd.toml"]' \
	--volume /etc/relayd \
	--volume /var/lib/relayd \
	--healthcheck 'CMD /usr/bin/relayd status --alive --socket /run/relayd/status.sock' \
	--healthcheck-interval 30s \
	--healthcheck-timeout 15s \
	--healthcheck-start-period 10s \
	--healthcheck-retries 3 \
	--label org.opencontainers.image.title=relayd \
	--label org.opencontainers.image.description="IMAP and SMTP with plain logins for legacy mail software, OAuth 2.0 upstream" \
	--label org.opencontainers.image.version="$version" \
	"$ctr"
buildah commit --quiet --format docker "$ctr" "$image"
