// Package realserver starts real Dovecot and Postfix from Debian's packages,
// each from its own configuration in a scratch directory on loopback, as
// upstreams for tests and benchmarks (see docs/testing.md). It is never
// linked into relayd itself: the in-process fakes are in package testkit.
package realserver

import (
	"os"
	"os/exec"
	"testing"
)

// RequireBinary returns the path of a program a real-server test needs. When
// it is missing the test is skipped with the Debian package to install, or,
// with RELAYD_REQUIRE_REAL=1 (as in CI), fails.
func RequireBinary(t testing.TB, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err == nil {
		return path
	}
	for _, dir := range []string{"/usr/sbin", "/sbin"} {
		if p := dir + "/" + name; fileExists(p) {
			return p
		}
	}
	msg := name + " not found: install the Debian package " + debianPackage + " to run this test"
	if os.Getenv("RELAYD_REQUIRE_REAL") == "1" {
		t.Fatal(msg + " (RELAYD_REQUIRE_REAL=1)")
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
