package tcpproxy

import (
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/h2ctest"
)

// Benchmarks of tcp_proxy over HTTP/2 CONNECT to an x/net echo upstream on
// loopback. Allocations count both hop and the test's client and server.

// BenchmarkTunnelSetupH2 opens one tunnel per op, each a new stream on
// the shared HTTP/2 connection: dial, CONNECT/200, one byte each way,
// half-closes both ways.
func BenchmarkTunnelSetupH2(b *testing.B) {
	k := tunnelKind{name: "h2", h2: true}
	srv := h2ctest.Start(b, http.HandlerFunc(h2Echo))
	r := newRigWith(b, tunnelProxyFor("bench", k), Downstream{}, h2ClusterFor(b, "up", srv.Addr))
	addr := r.ln.Addr().String()
	buf := make([]byte, 1)
	b.ReportAllocs()
	for b.Loop() {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(testTimeout))
		if _, err := c.Write([]byte{'x'}); err != nil {
			b.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		if _, err := c.Read(buf); err != io.EOF {
			b.Fatalf("after the echo: %v, want EOF", err)
		}
		c.Close()
		<-r.closed
	}
	b.StopTimer()
	if srv.Accepted.Load() != 1 {
		b.Errorf("%d upstream connections, want 1", srv.Accepted.Load())
	}
}

// BenchmarkTunnelBulkH2 moves 64 KiB through one tunnel and back per op.
func BenchmarkTunnelBulkH2(b *testing.B) {
	const chunk = 64 << 10
	k := tunnelKind{name: "h2", h2: true}
	srv := h2ctest.Start(b, http.HandlerFunc(h2Echo))
	r := newRigWith(b, tunnelProxyFor("bench", k), Downstream{}, h2ClusterFor(b, "up", srv.Addr))
	c := r.dial()
	c.SetDeadline(time.Time{})
	out := make([]byte, chunk)
	in := make([]byte, chunk)
	werr := make(chan error, 1)
	b.SetBytes(chunk)
	b.ReportAllocs()
	for b.Loop() {
		go func() {
			_, err := c.Write(out)
			werr <- err
		}()
		if _, err := io.ReadFull(c, in); err != nil {
			b.Fatal(err)
		}
		if err := <-werr; err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	c.Close()
	<-r.closed
}
