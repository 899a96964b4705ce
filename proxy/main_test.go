package proxy

import (
	"os"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	// Spliced sessions park whenever a direction is quiet for a moment,
	// so that every test of a session runs through parking and waking
	// (park.go); the daemon's default is seconds.
	parkAfter = 20 * time.Millisecond
	os.Exit(m.Run())
}
