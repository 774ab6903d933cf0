package tcpproxy

import (
	"io"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"github.com/hopproxy/hop/internal/h2ctest"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// How tunnels end: connect failures, half-closes, resets, the idle
// timeout; and which protocol a cluster's tunnels use.

// TestTunnelDeadCluster: connect failures are retried like refusals.
func TestTunnelDeadCluster(t *testing.T) {
	for _, k := range []tunnelKind{tunnelKinds[0], tunnelKinds[2]} {
		t.Run(k.name, func(t *testing.T) {
			ctx := testCtx(t)
			r := newRigWith(t, tunnelProxyFor("dead", k, func(p *tcpv3.TcpProxy) { p.MaxConnectAttempts = wrapperspb.UInt32(3) }),
				Downstream{}, clusterFor(t, k, deadAddr(t)))
			expectClosed(t, r.dial(), true)
			r.waitClosed(ctx, 1)
			for name, want := range map[string]int64{
				"cluster.up.upstream_cx_connect_attempts_exceeded": 1,
				"cluster.up.upstream_cx_connect_fail":              3,
			} {
				if got := r.statOr0(name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
		})
	}
}

// TestTunnelHalfClose: each side's end of stream reaches the other while
// the opposite direction keeps flowing.
func TestTunnelHalfClose(t *testing.T) {
	for _, k := range []tunnelKind{tunnelKinds[0], tunnelKinds[2]} {
		t.Run(k.name+" client first", func(t *testing.T) {
			ctx := testCtx(t)
			fs, reqs, addr := halfCloseUpstream(t, k)
			r := newRigWith(t, tunnelProxyFor("hc", k), Downstream{}, clusterFor(t, k, addr))
			c := r.dial()
			c.Write([]byte("hello"))
			c.CloseWrite()
			if k.h2 {
				st := fs.next(ctx, t)
				st.respond(200, false)
				if got, ok := st.readAll(ctx); !ok || string(got) != "hello" {
					t.Fatalf("upstream read %q, END_STREAM %v", got, ok)
				}
				st.send([]byte("bye"), true)
			} else {
				req := nextH1(ctx, t, reqs)
				req.respond("200 OK")
				if got, err := io.ReadAll(req.br); err != nil || string(got) != "hello" {
					t.Fatalf("upstream read %q, %v", got, err)
				}
				req.conn.Write([]byte("bye"))
				req.conn.CloseWrite()
			}
			if got, err := io.ReadAll(c); err != nil || string(got) != "bye" {
				t.Fatalf("client read %q, %v", got, err)
			}
			c.Close()
			r.waitClosed(ctx, 1)
		})
		t.Run(k.name+" upstream first", func(t *testing.T) {
			ctx := testCtx(t)
			fs, reqs, addr := halfCloseUpstream(t, k)
			r := newRigWith(t, tunnelProxyFor("hc", k), Downstream{}, clusterFor(t, k, addr))
			c := r.dial()
			var st *frameStream
			var req *h1Request
			if k.h2 {
				st = fs.next(ctx, t)
				st.respond(200, false)
				st.send([]byte("hi"), true)
			} else {
				req = nextH1(ctx, t, reqs)
				req.respond("200 OK")
				req.conn.Write([]byte("hi"))
				req.conn.CloseWrite()
			}
			if got, err := io.ReadAll(c); err != nil || string(got) != "hi" {
				t.Fatalf("client read %q, %v", got, err)
			}
			if _, err := c.Write([]byte("hello")); err != nil {
				t.Fatal(err)
			}
			c.CloseWrite()
			if k.h2 {
				if got, ok := st.readAll(ctx); !ok || string(got) != "hello" {
					t.Fatalf("upstream read %q, END_STREAM %v", got, ok)
				}
			} else if got, err := io.ReadAll(req.br); err != nil || string(got) != "hello" {
				t.Fatalf("upstream read %q, %v", got, err)
			}
			c.Close()
			r.waitClosed(ctx, 1)
		})
	}
	t.Run("h2 reset closes the client", func(t *testing.T) {
		ctx := testCtx(t)
		fs := serveFrames(t)
		k := tunnelKinds[2]
		r := newRigWith(t, tunnelProxyFor("hc", k), Downstream{}, clusterFor(t, k, fs.addr))
		c := r.dial()
		st := fs.next(ctx, t)
		st.respond(200, false)
		st.send([]byte("x"), false)
		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}
		st.rst()
		expectClosed(t, c, false)
		r.waitClosed(ctx, 1)
	})
}

func halfCloseUpstream(t *testing.T, k tunnelKind) (*frameServer, chan *h1Request, string) {
	if k.h2 {
		fs := serveFrames(t)
		return fs, nil, fs.addr
	}
	addr, reqs := h1Requests(t)
	return nil, reqs, addr
}

// TestTunnelIdleTimeoutWaiting: the idle timeout runs from the start, so
// a tunnel whose upstream never answers is closed and counted.
func TestTunnelIdleTimeoutWaiting(t *testing.T) {
	const idle = 200 * time.Millisecond
	for _, k := range []tunnelKind{tunnelKinds[0], tunnelKinds[2]} {
		t.Run(k.name, func(t *testing.T) {
			ctx := testCtx(t)
			fs, reqs, addr := halfCloseUpstream(t, k)
			r := newRigWith(t, tunnelProxyFor("idle", k, func(p *tcpv3.TcpProxy) { p.IdleTimeout = durationpb.New(idle) }),
				Downstream{}, clusterFor(t, k, addr))
			start := time.Now()
			c := r.dial()
			expectClosed(t, c, true)
			if d := time.Since(start); d < idle {
				t.Errorf("closed after %v, before the idle timeout", d)
			}
			if k.h2 {
				if !fs.next(ctx, t).wasReset(ctx) {
					t.Error("the waiting stream was not reset")
				}
			} else if rest, err := io.ReadAll(nextH1(ctx, t, reqs).br); len(rest) != 0 || err != nil {
				t.Errorf("upstream read %q, %v; want the connection closed", rest, err)
			}
			r.waitClosed(ctx, 1)
			if got := r.stat("tcp.idle.idle_timeout"); got != 1 {
				t.Errorf("idle_timeout = %d, want 1", got)
			}
		})
	}
}

// TestTunnelProtocolByCluster: HTTP/2 configured on the cluster means
// HTTP/2 tunnels, as Envoy's HTTP2 cluster feature.
func TestTunnelProtocolByCluster(t *testing.T) {
	t.Run("use_downstream without http2 options", func(t *testing.T) {
		addr, _ := serveH1(t, h1Echo)
		c := staticCluster(t, "up", addr)
		c.ProtocolSelection = clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL
		r := newRigWith(t, tunnelProxyFor("p", tunnelKinds[0]), Downstream{}, c)
		if got := exchange(t, r.dial(), []byte("h1")); string(got) != "h1" {
			t.Fatalf("echoed %q", got)
		}
	})
	t.Run("use_downstream with http2 options", func(t *testing.T) {
		srv := h2ctest.Start(t, http.HandlerFunc(h2Echo))
		c := staticCluster(t, "up", srv.Addr)
		c.ProtocolSelection = clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL
		c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
		r := newRigWith(t, tunnelProxyFor("p", tunnelKinds[2]), Downstream{}, c)
		if got := exchange(t, r.dial(), []byte("h2")); string(got) != "h2" {
			t.Fatalf("echoed %q", got)
		}
	})
}
