package proxy

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"testing"
	"time"

	"github.com/relayd/relayd/auth"
	"github.com/relayd/relayd/internal/testkit"
)

// BenchmarkCopyBulk measures the upstream-to-downstream copy alone, with a
// plaintext (splice) and a TLS upstream, against reading the same stream
// directly: go test -bench CopyBulk ./proxy. The stream is zeros (one line
// that never ends, which relayd must look at all of), or with "plain-fetch" FETCH
// responses each carrying a 1 MiB literal (which relayd splices unseen).
func BenchmarkCopyBulk(b *testing.B) {
	for _, tc := range []struct {
		name  string
		tls   bool
		relay bool
		fetch bool
	}{
		{"plain/direct", false, false, false}, {"plain/relayd", false, true, false},
		{"tls/direct", true, false, false}, {"tls/relayd", true, true, false},
		{"plain-fetch/direct", false, false, true}, {"plain-fetch/relayd", false, true, true},
	} {
		b.Run(tc.name, func(b *testing.B) {
			payload := make([]byte, 1<<20)
			if tc.fetch {
				payload = append([]byte("* 1 FETCH (UID 7 BODY[] {1048576}\r\n"), payload...)
				payload = append(payload, ")\r\n"...)
			}
			chunk := len(payload)
			src, dst := pipeline(b, tc.tls, tc.relay, false)
			go func() {
				for {
					if _, err := src.Write(payload); err != nil {
						return
					}
				}
			}()
			b.SetBytes(int64(chunk))
			b.ResetTimer()
			buf := make([]byte, 64<<10)
			for i := 0; i < b.N; i++ {
				for n := 0; n < chunk; {
					m, err := dst.Read(buf[:min(len(buf), chunk-n)])
					if err != nil {
						b.Fatal(err)
					}
					n += m
				}
			}
		})
	}
}

// pipeline returns the writing end of an upstream and the reading end the
// client sees: directly, or through copyBulk.
func pipeline(b *testing.B, useTLS, relay, downTLS bool) (up io.Writer, down io.Reader) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	cert, pemBytes, _ := testkit.SelfSigned("127.0.0.1")
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		if useTLS {
			c = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}})
		}
		accepted <- c
	}()
	var upClient net.Conn
	upClient, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	if useTLS {
		acct := &auth.Account{RootCAs: x509Pool(pemBytes)}
		upClient = upstreamTLS(upClient, acct.TLSConfig("127.0.0.1")) // as relayd dials
	}
	server := <-accepted
	b.Cleanup(func() { server.Close(); upClient.Close() })
	if !relay {
		return server, upClient
	}
	ln2, _ := net.Listen("tcp", "127.0.0.1:0")
	b.Cleanup(func() { ln2.Close() })
	go func() {
		c, err := ln2.Accept()
		if err != nil {
			return
		}
		if downTLS { // relayd's implicit-TLS listener
			c = tls.Server(c, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		}
		copyBulk(c, upClient, time.Minute, newClientStream(), nil)
		c.Close()
	}()
	dc, err := net.Dial("tcp", ln2.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	if downTLS {
		dc = tls.Client(dc, &tls.Config{RootCAs: x509Pool(pemBytes), ServerName: "127.0.0.1"})
	}
	b.Cleanup(func() { dc.Close() })
	return server, dc
}

// BenchmarkDownstreamTLS is the downstream TLS cost: FETCH responses
// carrying 1 MiB literals from a plaintext upstream through relayd to a
// client on a plaintext listener (splice(2)) and on an implicit-TLS one
// (crypto/tls, AES-GCM), in the same run; the README reports tls/plain as
// a ratio: go test -run '^$' -bench DownstreamTLS -count 5 ./proxy.
func BenchmarkDownstreamTLS(b *testing.B) {
	for _, tc := range []struct {
		name    string
		downTLS bool
	}{{"plain", false}, {"tls", true}} {
		b.Run(tc.name, func(b *testing.B) {
			payload := append([]byte("* 1 FETCH (UID 7 BODY[] {1048576}\r\n"), make([]byte, 1<<20)...)
			payload = append(payload, ")\r\n"...)
			src, dst := pipeline(b, false, true, tc.downTLS)
			go func() {
				for {
					if _, err := src.Write(payload); err != nil {
						return
					}
				}
			}()
			b.SetBytes(int64(len(payload)))
			b.ResetTimer()
			buf := make([]byte, 64<<10)
			for i := 0; i < b.N; i++ {
				for n := 0; n < len(payload); {
					m, err := dst.Read(buf[:min(len(buf), len(payload)-n)])
					if err != nil {
						b.Fatal(err)
					}
					n += m
				}
			}
		})
	}
}

func x509Pool(pemBytes []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pemBytes)
	return p
}
