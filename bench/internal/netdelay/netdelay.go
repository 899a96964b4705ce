// Package netdelay emulates a network round-trip time on loopback for the
// benchmarks, where the kernel has no netem: a TCP relay that holds every
// chunk for half the RTT in each direction, and a new connection for the
// TCP handshake's time, so that a client connecting through it waits as
// it would for a server RTT away.
//
// The handshake: a client's SYN reaches the server after RTT/2, its SYN-ACK
// comes back at RTT (connect returns), and the server accepts when the
// client's ACK arrives, at 1.5 RTT; a server that greets first is heard at
// 2 RTT. Locally connect returns at once, so the relay dials the server
// 1.5 RTT after it accepted the client, and delivers what the client sent
// meanwhile no earlier than that. Bandwidth is not limited.
package netdelay

import (
	"net"
	"sync"
	"time"
)

// Relay forwards connections from its address to a target, delayed.
type Relay struct {
	ln     net.Listener
	target string
	rtt    time.Duration
	wg     sync.WaitGroup
}

// Start listens on a free loopback port and relays to target with
// round-trip time rtt.
func Start(target string, rtt time.Duration) (*Relay, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &Relay{ln: ln, target: target, rtt: rtt}
	r.wg.Add(1)
	go r.serve()
	return r, nil
}

// Addr is where clients connect.
func (r *Relay) Addr() string { return r.ln.Addr().String() }

// Close stops accepting; relayed connections end with their ends.
func (r *Relay) Close() error {
	err := r.ln.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) serve() {
	defer r.wg.Done()
	for {
		c, err := r.ln.Accept()
		if err != nil {
			return
		}
		go r.relay(c.(*net.TCPConn))
	}
}

// chunk is bytes read at one end, due at the other at due.
type chunk struct {
	b   []byte
	due time.Time
}

func (r *Relay) relay(client *net.TCPConn) {
	accepted := time.Now()
	half := r.rtt / 2
	up := make(chan chunk, 256)
	go read(client, up, half)
	time.Sleep(time.Until(accepted.Add(3 * half))) // the server accepts at 1.5 RTT
	s, err := net.Dial("tcp", r.target)
	if err != nil {
		client.Close()
		for range up {
		}
		return
	}
	server := s.(*net.TCPConn)
	down := make(chan chunk, 256)
	go read(server, down, half)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); write(server, up) }()
	go func() { defer wg.Done(); write(client, down) }()
	wg.Wait()
	client.Close()
	server.Close()
}

// read stamps each chunk read from c with when it is due at the other
// end, and closes ch at the end of c's stream.
func read(c *net.TCPConn, ch chan<- chunk, delay time.Duration) {
	defer close(ch)
	buf := make([]byte, 32<<10)
	for {
		n, err := c.Read(buf)
		if n > 0 {
			ch <- chunk{b: append([]byte(nil), buf[:n]...), due: time.Now().Add(delay)}
		}
		if err != nil {
			return
		}
	}
}

// write delivers each chunk to c when due, then half-closes c, as the
// stream it came from ended.
func write(c *net.TCPConn, ch <-chan chunk) {
	failed := false
	for ck := range ch {
		if failed {
			continue // drain, so that the reader ends
		}
		time.Sleep(time.Until(ck.due))
		if _, err := c.Write(ck.b); err != nil {
			failed = true
			c.CloseRead()
		}
	}
	c.CloseWrite()
}
