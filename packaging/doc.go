// Package packaging holds what installs relayd as a system service: the
// systemd units (packaging/systemd), sysusers.d and tmpfiles.d entries,
// the nfpm recipe and each packager's maintainer scripts (scripts/deb,
// scripts/rpm), the container image's build (image/build.sh), Prometheus
// alert rules, and the man pages; its tests check them with the tools a
// distribution would (systemd-analyze, promtool, lintian, rpmlint), install
// and purge the .deb in a throwaway root, and run the image with podman.
package packaging
