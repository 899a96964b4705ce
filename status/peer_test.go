package status

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The credentials a connection's requests see are taken once, at
// accept: uid, gid, pid and the supplementary groups (SO_PEERGROUPS),
// bound to the connection.
func TestPeerTakenAtAccept(t *testing.T) {
	inner, err := net.Listen("unix", fmt.Sprintf("@relayd-test-peer-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	ln := newLimitListener(inner, "status socket", 8, 2, slog.New(slog.NewTextHandler(io.Discard, nil)))
	c, err := net.Dial("unix", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	lc, ok := sc.(*limitedConn)
	if !ok || lc.peer == nil {
		t.Fatalf("accepted %T without its peer", sc)
	}
	p, _ := connContext(context.Background(), sc).Value(peerKey{}).(*Peer)
	if p != lc.peer {
		t.Fatalf("the requests' peer %+v is not the one taken at accept %+v", p, lc.peer)
	}
	want, err := os.Getgroups()
	if err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(slices.Values(p.Groups))
	slices.Sort(want)
	if p.UID != os.Geteuid() || p.GID != os.Getegid() || p.PID != os.Getpid() || !slices.Equal(got, want) {
		t.Errorf("peer = %+v; want uid %d, gid %d, pid %d, groups %v", p, os.Geteuid(), os.Getegid(), os.Getpid(), want)
	}
}

// Admin rights come from the groups the caller had when it connected,
// never from what its PID shows later: a process that connects without
// admin_group and gains it afterwards (or whose PID another process
// takes) is refused, and one that connected with it keeps it.
func TestPeerGroupsAreThoseOfConnect(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root, to change a child's groups after it connected")
	}
	var admin *user.Group
	for _, name := range []string{"adm", "daemon", "bin", "sys", "users", "nogroup"} {
		if g, err := user.LookupGroup(name); err == nil && g.Gid != "0" {
			admin = g
			break
		}
	}
	if admin == nil {
		t.Skip("no group other than root's to use as admin_group")
	}
	b := &fakeBackend{st: &Status{}}
	srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)), nil)
	if err := srv.SetAdminGroup(admin.Name); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", fmt.Sprintf("@relayd-test-groups-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	defer srv.Shutdown(context.Background())

	for _, tc := range []struct {
		name          string
		before, after string // the child's groups when it connects, and when it asks
		want          int
	}{
		{"gains admin_group after connecting", "", admin.Gid, http.StatusForbidden},
		{"leaves admin_group after connecting", admin.Gid, "", http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestPeerChild$")
			cmd.Env = append(os.Environ(), "RELAYD_PEER_CHILD="+ln.Addr().String(),
				"RELAYD_PEER_CHILD_BEFORE="+tc.before, "RELAYD_PEER_CHILD_AFTER="+tc.after)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("child: %v\n%s", err, out)
			}
			var code int
			for line := range strings.Lines(string(out)) {
				if rest, ok := strings.CutPrefix(line, "STATUS "); ok {
					code, _ = strconv.Atoi(strings.TrimSpace(rest))
				}
			}
			if code != tc.want {
				t.Errorf("POST /v1/reload by uid 65534 that connected with groups [%s] and asked with [%s] = %d, want %d\n%s",
					tc.before, tc.after, code, tc.want, out)
			}
		})
	}
}

// TestPeerChild is TestPeerGroupsAreThoseOfConnect's child process: it
// connects as uid 65534 with the groups RELAYD_PEER_CHILD_BEFORE, takes
// RELAYD_PEER_CHILD_AFTER, then asks for a reload and prints the answer's
// status code.
func TestPeerChild(t *testing.T) {
	addr := os.Getenv("RELAYD_PEER_CHILD")
	if addr == "" {
		t.Skip("the child process of TestPeerGroupsAreThoseOfConnect")
	}
	groups := func(env string) []int {
		var gs []int
		if v := os.Getenv(env); v != "" {
			g, err := strconv.Atoi(v)
			if err != nil {
				t.Fatal(err)
			}
			gs = append(gs, g)
		}
		return gs
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(syscall.Setgroups(groups("RELAYD_PEER_CHILD_BEFORE")))
	must(syscall.Seteuid(65534))
	c, err := net.Dial("unix", addr)
	must(err)
	defer c.Close()
	must(syscall.Seteuid(0))
	must(syscall.Setgroups(groups("RELAYD_PEER_CHILD_AFTER")))
	must(syscall.Seteuid(65534))
	c.SetDeadline(time.Now().Add(30 * time.Second))
	_, err = io.WriteString(c, "POST /v1/reload HTTP/1.1\r\nHost: relayd\r\nContent-Length: 0\r\n\r\n")
	must(err)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	must(err)
	resp.Body.Close()
	fmt.Printf("STATUS %d\n", resp.StatusCode)
}
