package netdelay

import (
	"bufio"
	"net"
	"testing"
	"time"
)

// The relay never delivers early: a server that greets first is heard
// 2 RTT after connecting, a reply one RTT after its request. (Only lower
// bounds: how late a loaded machine delivers is the benchmark's business.)
func TestRelayDelays(t *testing.T) {
	const rtt = 40 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.Write([]byte("* OK hello\r\n"))
		br := bufio.NewReader(c)
		for {
			l, err := br.ReadString('\n')
			if err != nil {
				return
			}
			c.Write([]byte(l))
		}
	}()
	r, err := Start(ln.Addr().String(), rtt)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	t0 := time.Now()
	c, err := net.Dial("tcp", r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if l, err := br.ReadString('\n'); err != nil || l != "* OK hello\r\n" {
		t.Fatalf("greeting = %q, %v", l, err)
	}
	if d := time.Since(t0); d < 2*rtt {
		t.Errorf("greeting after %v, want at least 2 RTT (%v)", d, 2*rtt)
	}
	t1 := time.Now()
	c.Write([]byte("a NOOP\r\n"))
	if l, err := br.ReadString('\n'); err != nil || l != "a NOOP\r\n" {
		t.Fatalf("echo = %q, %v", l, err)
	}
	if d := time.Since(t1); d < rtt {
		t.Errorf("reply after %v, want at least one RTT (%v)", d, rtt)
	}
	c.(*net.TCPConn).CloseWrite()
	if _, err := br.ReadString('\n'); err == nil {
		t.Error("the relay did not pass on the end of the stream")
	}
}
