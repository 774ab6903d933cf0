package tcpproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/hopproxy/hop/internal/h2ctest"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// tunnelKind is one way of carrying the tunnel.
type tunnelKind struct {
	name     string
	h2, post bool
}

var tunnelKinds = []tunnelKind{
	{"h1-connect", false, false}, {"h1-post", false, true},
	{"h2-connect", true, false}, {"h2-post", true, true},
}

// tunnelProxyFor is a tcp_proxy tunnelling to cluster "up" as k says.
func tunnelProxyFor(prefix string, k tunnelKind, mod ...func(*tcpv3.TcpProxy)) *tcpv3.TcpProxy {
	p := &tcpv3.TcpProxy{StatPrefix: prefix, ClusterSpecifier: single("up"),
		TunnelingConfig: &tcpv3.TcpProxy_TunnelingConfig{Hostname: "foo.lyft.com:80", UsePost: k.post}}
	for _, m := range mod {
		m(p)
	}
	return p
}

// clusterFor is cluster "up" at addr speaking k's protocol.
func clusterFor(t *testing.T, k tunnelKind, addr string) *clusterv3.Cluster {
	if k.h2 {
		return h2ClusterFor(t, "up", addr)
	}
	return staticCluster(t, "up", addr)
}

// echoUpstream serves k's echo: HTTP/1.1 CONNECT or chunked POST, or an
// HTTP/2 stream.
func echoUpstream(t *testing.T, k tunnelKind) string {
	switch {
	case k.h2:
		return h2ctest.Start(t, http.HandlerFunc(h2Echo)).Addr
	case k.post:
		a, _ := serveH1(t, h1PostEcho)
		return a
	}
	a, _ := serveH1(t, h1Echo)
	return a
}

// exchange writes payload, half-closes, and returns all it reads until EOF.
func exchange(t *testing.T, c *net.TCPConn, payload []byte) []byte {
	t.Helper()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v (after %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	return got
}

func TestTunnelEchoMiB(t *testing.T) {
	for _, k := range tunnelKinds {
		t.Run(k.name, func(t *testing.T) {
			ctx := testCtx(t)
			r := newRigWith(t, tunnelProxyFor("tun", k), Downstream{}, clusterFor(t, k, echoUpstream(t, k)))
			payload := make([]byte, 1<<20)
			rand.Read(payload)
			c := r.dial()
			if got := exchange(t, c, payload); !bytes.Equal(got, payload) {
				t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(payload))
			}
			c.Close()
			r.waitClosed(ctx, 1)
			for name, want := range map[string]int64{
				"tcp.tun.downstream_cx_total":                      1,
				"tcp.tun.downstream_cx_rx_bytes_total":             1 << 20,
				"tcp.tun.downstream_cx_tx_bytes_total":             1 << 20,
				"tcp.tun.idle_timeout":                             0,
				"tcp.tun.upstream_flush_total":                     0,
				"tcp.tun.upstream_flush_active":                    0,
				"cluster.up.upstream_cx_total":                     1,
				"cluster.up.upstream_rq_total":                     1,
				"cluster.up.upstream_cx_connect_attempts_exceeded": 0,
			} {
				if got := r.statOr0(name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
		})
	}
}

// h1Requests serves HTTP/1.1 and hands every request to the test; the
// connection stays open until the test ends.
func h1Requests(t *testing.T) (string, chan *h1Request) {
	t.Helper()
	reqs := make(chan *h1Request, 16)
	stop := make(chan struct{})
	addr, _ := serveH1(t, func(r *h1Request) {
		reqs <- r
		<-stop
	})
	t.Cleanup(func() { close(stop) })
	return addr, reqs
}

func nextH1(ctx context.Context, t *testing.T, reqs chan *h1Request) *h1Request {
	t.Helper()
	select {
	case r := <-reqs:
		return r
	case <-ctx.Done():
		t.Fatal("no request reached the upstream")
		return nil
	}
}

// TestTunnelRequestOnWire checks the request each kind sends, with
// headers_to_add and a hostname evaluated per connection.
func TestTunnelRequestOnWire(t *testing.T) {
	withHeaders := func(p *tcpv3.TcpProxy) {
		p.TunnelingConfig.Hostname = "%REQUESTED_SERVER_NAME%:443"
		p.TunnelingConfig.HeadersToAdd = []*corev3.HeaderValueOption{
			header("downstream-local-port", "%DOWNSTREAM_LOCAL_PORT%"),
			header("client-ip", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"),
			header("static", "v"),
		}
		if p.TunnelingConfig.UsePost {
			p.TunnelingConfig.PostPath = "/tunnel"
		}
	}
	info := Downstream{ServerName: "www.example.com"}
	for _, k := range tunnelKinds {
		t.Run(k.name, func(t *testing.T) {
			ctx := testCtx(t)
			var h1addr string
			var reqs chan *h1Request
			var fs *frameServer
			addr := ""
			if k.h2 {
				fs = serveFrames(t)
				addr = fs.addr
			} else {
				h1addr, reqs = h1Requests(t)
				addr = h1addr
			}
			r := newRigWith(t, tunnelProxyFor("w", k, withHeaders), info, clusterFor(t, k, addr))
			c := r.dial()
			port := strconv.Itoa(r.ln.Addr().(*net.TCPAddr).Port)
			want := map[string]string{"downstream-local-port": port, "client-ip": "127.0.0.1", "static": "v"}
			if !k.h2 {
				req := nextH1(ctx, t, reqs)
				line := strings.SplitN(req.head, "\r\n", 2)[0]
				wantLine := "CONNECT www.example.com:443 HTTP/1.1"
				if k.post {
					wantLine = "POST /tunnel HTTP/1.1"
					if !strings.Contains(req.head, "\r\nTransfer-Encoding: chunked\r\n") {
						t.Errorf("no Transfer-Encoding: chunked in\n%s", req.head)
					}
				}
				if line != wantLine || req.req.Host != "www.example.com:443" {
					t.Errorf("request line %q host %q, want %q host www.example.com:443\n%s", line, req.req.Host, wantLine, req.head)
				}
				for k, v := range want {
					if got := req.req.Header.Values(k); len(got) != 1 || got[0] != v {
						t.Errorf("%s: %q, want %q", k, got, v)
					}
				}
				c.Close()
				return
			}
			st := fs.next(ctx, t)
			wantPseudo := []string{":method", ":authority"}
			method := "CONNECT"
			if k.post {
				wantPseudo = []string{":authority", ":method", ":path", ":scheme"}
				method = "POST"
			}
			got := st.pseudo()
			if !sameSet(got, wantPseudo) {
				t.Errorf("pseudo-headers %v, want %v", got, wantPseudo)
			}
			for name, v := range map[string]string{":method": method, ":authority": "www.example.com:443"} {
				if got, _ := st.header(name); got != v {
					t.Errorf("%s = %q, want %q", name, got, v)
				}
			}
			if k.post {
				if p, _ := st.header(":path"); p != "/tunnel" {
					t.Errorf(":path %q", p)
				}
				if s, _ := st.header(":scheme"); s != "http" {
					t.Errorf(":scheme %q", s)
				}
			}
			for name, v := range want {
				if got, n := st.header(name); n != 1 || got != v {
					t.Errorf("%s: %q ×%d, want %q once", name, got, n, v)
				}
			}
			for _, bad := range []string{"host", ":protocol", "content-length", "transfer-encoding"} {
				if _, n := st.header(bad); n != 0 {
					t.Errorf("%s sent", bad)
				}
			}
			c.Close()
		})
	}
}

func sameSet(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]int{}
	for _, s := range a {
		m[s]++
	}
	for _, s := range b {
		m[s]--
	}
	for _, n := range m {
		if n != 0 {
			return false
		}
	}
	return true
}

// TestTunnelManyOnOneH2Connection: 100 concurrent tunnels share one
// HTTP/2 connection, each carrying its own bytes.
func TestTunnelManyOnOneH2Connection(t *testing.T) {
	ctx := testCtx(t)
	srv := h2ctest.Start(t, http.HandlerFunc(h2Echo))
	k := tunnelKind{name: "h2", h2: true}
	r := newRigWith(t, tunnelProxyFor("many", k), Downstream{}, clusterFor(t, k, srv.Addr))
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", r.ln.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(testTimeout))
			payload := make([]byte, 16<<10)
			rand.Read(payload)
			copy(payload, fmt.Sprintf("tunnel %d", i))
			go func() { c.Write(payload); c.(*net.TCPConn).CloseWrite() }()
			got, err := io.ReadAll(c)
			if err == nil && !bytes.Equal(got, payload) {
				err = fmt.Errorf("tunnel %d: echoed %d bytes, not its %d", i, len(got), len(payload))
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	r.waitClosed(ctx, n)
	if got := srv.Accepted.Load(); got != 1 {
		t.Errorf("the upstream saw %d connections, want 1", got)
	}
	if got := r.stat("cluster.up.upstream_rq_total"); got != n {
		t.Errorf("upstream_rq_total = %d, want %d", got, n)
	}
}

// TestTunnelHoldsBytesUntilAccepted: what the client sends before the
// upstream answered stays in hop until the answer, then all of it flows.
func TestTunnelHoldsBytesUntilAccepted(t *testing.T) {
	const window = 100 * time.Millisecond // how long "nothing arrives" is watched
	for _, k := range []tunnelKind{tunnelKinds[0], tunnelKinds[2]} {
		t.Run(k.name, func(t *testing.T) {
			ctx := testCtx(t)
			var reqs chan *h1Request
			var fs *frameServer
			var addr string
			if k.h2 {
				fs = serveFrames(t)
				addr = fs.addr
			} else {
				addr, reqs = h1Requests(t)
			}
			r := newRigWith(t, tunnelProxyFor("hold", k), Downstream{}, clusterFor(t, k, addr))
			c := r.dial()
			if _, err := c.Write([]byte("early")); err != nil {
				t.Fatal(err)
			}
			if !k.h2 {
				req := nextH1(ctx, t, reqs)
				if b := readFor(req.br, window, req.conn.SetReadDeadline); len(b) != 0 {
					t.Fatalf("upstream got %q before it answered", b)
				}
				req.respond("200 OK")
				got := make([]byte, 5)
				if _, err := io.ReadFull(req.br, got); err != nil || string(got) != "early" {
					t.Fatalf("upstream read %q, %v", got, err)
				}
				return
			}
			st := fs.next(ctx, t)
			select {
			case p := <-st.data:
				t.Fatalf("upstream got %q before it answered", p)
			case <-time.After(window):
			}
			st.respond(200, false)
			if got, ok := st.readN(ctx, 5); !ok || string(got) != "early" {
				t.Fatalf("upstream read %q (%v)", got, ok)
			}
		})
	}
}

// TestTunnelSuccessStatus: HTTP/1.1 takes any 2xx, HTTP/2 only 200.
func TestTunnelSuccessStatus(t *testing.T) {
	t.Run("h1 202", func(t *testing.T) {
		addr, _ := serveH1(t, func(r *h1Request) {
			r.respond("202 Accepted", "Content-Length: 10\r\n") // ignored on a CONNECT
			io.Copy(r.conn, r.br)
			r.conn.CloseWrite()
		})
		r := newRigWith(t, tunnelProxyFor("s", tunnelKinds[0]), Downstream{}, clusterFor(t, tunnelKinds[0], addr))
		if got := exchange(t, r.dial(), []byte("ping")); string(got) != "ping" {
			t.Fatalf("echoed %q", got)
		}
	})
	t.Run("h2 202", func(t *testing.T) {
		ctx := testCtx(t)
		fs := serveFrames(t)
		k := tunnelKinds[2]
		r := newRigWith(t, tunnelProxyFor("s", k), Downstream{}, clusterFor(t, k, fs.addr))
		c := r.dial()
		st := fs.next(ctx, t)
		st.respond(202, false)
		expectClosed(t, c, true)
		if !st.wasReset(ctx) {
			t.Error("the refused stream was not reset")
		}
		r.waitClosed(ctx, 1)
		if got := r.stat("cluster.up.upstream_cx_connect_attempts_exceeded"); got != 1 {
			t.Errorf("upstream_cx_connect_attempts_exceeded = %d, want 1", got)
		}
	})
	t.Run("h2 200 with END_STREAM", func(t *testing.T) {
		ctx := testCtx(t)
		fs := serveFrames(t)
		k := tunnelKinds[2]
		r := newRigWith(t, tunnelProxyFor("s", k), Downstream{}, clusterFor(t, k, fs.addr))
		c := r.dial()
		fs.next(ctx, t).respond(200, true)
		expectClosed(t, c, true)
		r.waitClosed(ctx, 1)
	})
}

// expectClosed reads from c and expects no byte and the end of the
// connection: a FIN when fin is set, else a FIN or a reset (closing a
// socket with unread bytes resets it).
func expectClosed(t *testing.T, c *net.TCPConn, fin bool) {
	t.Helper()
	n, err := c.Read(make([]byte, 64))
	if n != 0 {
		t.Fatalf("read %d bytes, want none", n)
	}
	if err == nil || fin && err != io.EOF || !fin && err != io.EOF && !isReset(err) {
		t.Fatalf("read error %v, want the connection closed", err)
	}
}

// TestTunnelRefused: a 503 closes the client without a byte, and what the
// client had sent never reaches the upstream.
func TestTunnelRefused(t *testing.T) {
	for _, k := range []tunnelKind{tunnelKinds[0], tunnelKinds[2]} {
		for _, early := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s early=%v", k.name, early), func(t *testing.T) {
				ctx := testCtx(t)
				var reqs chan *h1Request
				var fs *frameServer
				var addr string
				if k.h2 {
					fs = serveFrames(t)
					addr = fs.addr
				} else {
					addr, reqs = h1Requests(t)
				}
				r := newRigWith(t, tunnelProxyFor("no", k), Downstream{}, clusterFor(t, k, addr))
				c := r.dial()
				if early {
					c.Write([]byte("early"))
				}
				if !k.h2 {
					req := nextH1(ctx, t, reqs)
					req.respond("503 Service Unavailable", "Content-Length: 0\r\n")
					expectClosed(t, c, !early)
					if rest, err := io.ReadAll(req.br); len(rest) != 0 || err != nil {
						t.Errorf("upstream read %q, %v; want nothing, then the connection closed", rest, err)
					}
				} else {
					st := fs.next(ctx, t)
					st.respond(503, false)
					expectClosed(t, c, !early)
					if got, _ := st.readAll(ctx); len(got) != 0 {
						t.Errorf("upstream got %q", got)
					}
					select {
					case <-st.reset:
					default:
						t.Error("the refused stream was not reset")
					}
				}
				r.waitClosed(ctx, 1)
				if got := r.stat("cluster.up.upstream_cx_connect_attempts_exceeded"); got != 1 {
					t.Errorf("upstream_cx_connect_attempts_exceeded = %d, want 1", got)
				}
			})
		}
	}
}

// TestTunnelRetry: with max_connect_attempts 2 a refused or dropped first
// attempt is retried (HTTP/1.1 on a new connection, HTTP/2 on a new
// stream), and two failures close the client.
func TestTunnelRetry(t *testing.T) {
	attempts2 := func(p *tcpv3.TcpProxy) { p.MaxConnectAttempts = wrapperspb.UInt32(2) }
	t.Run("h1 closed before answering, then 200", func(t *testing.T) {
		ctx := testCtx(t)
		var mu sync.Mutex
		n := 0
		addr, conns := serveH1(t, func(r *h1Request) {
			mu.Lock()
			n++
			first := n == 1
			mu.Unlock()
			if first {
				return // closes without answering
			}
			h1Echo(r)
		})
		k := tunnelKinds[0]
		r := newRigWith(t, tunnelProxyFor("re", k, attempts2), Downstream{}, clusterFor(t, k, addr))
		c := r.dial()
		if got := exchange(t, c, []byte("hello")); string(got) != "hello" {
			t.Fatalf("echoed %q", got)
		}
		c.Close()
		r.waitClosed(ctx, 1)
		if conns.Load() != 2 || r.statOr0("cluster.up.upstream_cx_connect_attempts_exceeded") != 0 {
			t.Errorf("%d connections, attempts exceeded %d; want 2, 0", conns.Load(), r.statOr0("cluster.up.upstream_cx_connect_attempts_exceeded"))
		}
	})
	t.Run("h2 503 then 200", func(t *testing.T) {
		ctx := testCtx(t)
		fs := serveFrames(t)
		k := tunnelKinds[2]
		r := newRigWith(t, tunnelProxyFor("re", k, attempts2), Downstream{}, clusterFor(t, k, fs.addr))
		c := r.dial()
		c.Write([]byte("hello"))
		first := fs.next(ctx, t)
		first.respond(503, true)
		second := fs.next(ctx, t)
		if second.fc != first.fc {
			t.Error("the retry opened a new connection")
		}
		second.respond(200, false)
		if got, ok := second.readN(ctx, 5); !ok || string(got) != "hello" {
			t.Fatalf("upstream read %q", got)
		}
		second.send([]byte("world"), true)
		got := make([]byte, 5)
		if _, err := io.ReadFull(c, got); err != nil || string(got) != "world" {
			t.Fatalf("client read %q, %v", got, err)
		}
		c.Close()
		r.waitClosed(ctx, 1)
	})
	t.Run("h2 two refusals", func(t *testing.T) {
		ctx := testCtx(t)
		fs := serveFrames(t)
		k := tunnelKinds[2]
		r := newRigWith(t, tunnelProxyFor("re", k, attempts2), Downstream{}, clusterFor(t, k, fs.addr))
		c := r.dial()
		fs.next(ctx, t).respond(503, true)
		fs.next(ctx, t).respond(404, true)
		expectClosed(t, c, true)
		r.waitClosed(ctx, 1)
		if got := r.stat("cluster.up.upstream_cx_connect_attempts_exceeded"); got != 1 {
			t.Errorf("upstream_cx_connect_attempts_exceeded = %d, want 1", got)
		}
	})
}
