// Package packaging holds what installs relayd as a system service: the
// systemd units (packaging/systemd), sysusers.d and tmpfiles.d entries,
// Prometheus alert rules, and the man pages; its tests check them with the
// tools a distribution would (systemd-analyze, promtool).
package packaging
