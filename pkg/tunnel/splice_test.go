package tunnel

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

const defaultTestTimeout = 10 * time.Second

// pair returns the two ends of a loopback TCP connection.
func pair(t testing.TB) (*net.TCPConn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		ch <- c
	}()
	a, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a.(*net.TCPConn), b.(*net.TCPConn)
}

// wrapped hides the *net.TCPConn type, as a listener wrapper would, but
// can hand it back (Unwrapper).
type wrapped struct {
	net.Conn
	tcp *net.TCPConn
}

func (w wrapped) TCP() *net.TCPConn { return w.tcp }

// opaque hides the *net.TCPConn for good: the copy must use the buffer path.
type opaque struct{ net.Conn }

func TestRawUnwraps(t *testing.T) {
	a, _ := pair(t)
	if raw(wrapped{a, a}) != net.Conn(a) {
		t.Error("an Unwrapper must give its *net.TCPConn for splicing")
	}
	if _, ok := raw(opaque{a}).(*net.TCPConn); ok {
		t.Error("an opaque wrapper must be kept")
	}
}

// TestSpliceBothWaysWithHalfClose: preludes first, bytes intact both ways,
// a half-close passes through while the other direction keeps going, and
// both ends close once both directions ended.
func TestSpliceBothWaysWithHalfClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*net.TCPConn) net.Conn
		// halfClose: the wrapper can pass a half-close on. Without
		// CloseWrite the end of one direction closes both (Envoy's
		// HTTP/1.1 behaviour).
		halfClose bool
	}{
		{"tcp", func(c *net.TCPConn) net.Conn { return c }, true},
		{"unwrapper", func(c *net.TCPConn) net.Conn { return wrapped{c, c} }, true},
		{"opaque", func(c *net.TCPConn) net.Conn { return opaque{c} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, a := pair(t) // client ↔ a (downstream)
			b, server := pair(t) // b ↔ server (upstream)
			client.SetDeadline(time.Now().Add(defaultTestTimeout))
			server.SetDeadline(time.Now().Add(defaultTestTimeout))
			done := make(chan Result, 1)
			go func() { done <- Splice(tc.wrap(a), tc.wrap(b), []byte("pre-a"), []byte("pre-b"), Options{}) }()

			up := make([]byte, 3<<20)
			for i := range up {
				up[i] = byte(i % 251)
			}
			go func() {
				client.Write(up)
				client.CloseWrite()
			}()
			got, err := io.ReadAll(server) // until the half-close arrives
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, append([]byte("pre-a"), up...)) {
				t.Fatalf("upstream got %d bytes, want %d intact", len(got), len(up)+5)
			}
			if !tc.halfClose {
				if back, _ := io.ReadAll(client); string(back) != "pre-b" {
					t.Fatalf("client got %q", back)
				}
				if r := <-done; r.Cause != CausePeerClose {
					t.Fatalf("cause %s", r.Cause)
				}
				return
			}
			// The other direction still works after the half-close.
			server.Write([]byte("late answer"))
			server.CloseWrite()
			back, err := io.ReadAll(client)
			if err != nil {
				t.Fatal(err)
			}
			if string(back) != "pre-blate answer" {
				t.Fatalf("client got %q", back)
			}
			select {
			case r := <-done:
				if r.Cause != CausePeerClose || r.AtoB != int64(len(up)+5) || r.BtoA != int64(len("pre-blate answer")) {
					t.Fatalf("result %+v", r)
				}
			case <-time.After(defaultTestTimeout):
				t.Fatal("splice did not end")
			}
		})
	}
}

// TestSpliceIdleTimeout: no byte either way for the idle timeout closes
// both sides; traffic in one direction only keeps the tunnel alive. Both
// idle checks are covered: read deadlines between two TCP connections, the
// watchdog timer for anything else (streams).
func TestSpliceIdleTimeout(t *testing.T) {
	for _, tc := range []struct {
		name string
		wrap func(*net.TCPConn) net.Conn
	}{
		{"tcp", func(c *net.TCPConn) net.Conn { return c }},
		{"opaque", func(c *net.TCPConn) net.Conn { return opaque{c} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, a := pair(t)
			b, server := pair(t)
			done := make(chan Result, 1)
			const idle = 200 * time.Millisecond
			go func() { done <- Splice(tc.wrap(a), tc.wrap(b), nil, nil, Options{IdleTimeout: idle}) }()

			// Server-push only, for 3 idle periods: not idle.
			stop := time.Now().Add(3 * idle)
			buf := make([]byte, 1)
			var last time.Time
			for time.Now().Before(stop) {
				last = time.Now()
				server.Write([]byte("x"))
				client.SetReadDeadline(time.Now().Add(defaultTestTimeout))
				if _, err := client.Read(buf); err != nil {
					t.Fatalf("tunnel closed while one direction was busy: %v", err)
				}
				<-time.After(idle / 5)
			}
			select {
			case r := <-done:
				if r.Cause != CauseIdleTimeout {
					t.Fatalf("cause %s", r.Cause)
				}
				if d := time.Since(last); d < idle {
					t.Errorf("closed %v after the last byte, before the idle timeout", d)
				}
			case <-time.After(defaultTestTimeout):
				t.Fatal("idle tunnel not closed")
			}
			client.SetReadDeadline(time.Now().Add(defaultTestTimeout))
			if _, err := client.Read(buf); err == nil {
				t.Error("client side still open")
			}
		})
	}
}

// TestSpliceErrorClosesBoth: a reset on one side ends the other.
func TestSpliceErrorClosesBoth(t *testing.T) {
	client, a := pair(t)
	b, server := pair(t)
	done := make(chan Result, 1)
	go func() { done <- Splice(a, b, nil, nil, Options{}) }()
	server.SetLinger(0)
	server.Close() // RST
	client.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	if _, err := io.ReadAll(client); err != nil && !isTimeout(err) {
		// reset or EOF are both fine: the client side is closed
	}
	select {
	case <-done:
	case <-time.After(defaultTestTimeout):
		t.Fatal("splice did not end after a reset")
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// BenchmarkSpliceEcho measures a round trip of a 1 KiB message through
// Splice between two *net.TCPConn (kernel splice on Linux): the tunnel
// itself must not allocate per message.
func BenchmarkSpliceEcho(b *testing.B) {
	client, a := pair(b)
	up, server := pair(b)
	go Splice(a, up, nil, nil, Options{IdleTimeout: time.Minute})
	go io.Copy(server, server) // echo
	msg := make([]byte, 1024)
	buf := make([]byte, 1024)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		client.Write(msg)
		io.ReadFull(client, buf)
	}
}
