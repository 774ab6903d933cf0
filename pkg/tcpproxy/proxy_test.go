package tcpproxy

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

const testTimeout = 10 * time.Second

func testCtx(t testing.TB) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	return ctx
}

// rig is a tcp_proxy served on a loopback listener, with its clusters.
type rig struct {
	t      testing.TB
	st     *stats.Store
	cm     *upstream.Manager
	tr     *tunnel.Tracker
	cfg    *Config
	ln     net.Listener
	closed chan struct{} // one value per downstream connection gone (onClose)
}

// newRig starts the proxy for p; clusters maps cluster name → endpoint.
func newRig(t testing.TB, p *tcpv3.TcpProxy, clusters map[string]string) *rig {
	t.Helper()
	var cs []*clusterv3.Cluster
	for name, ep := range clusters {
		cs = append(cs, staticCluster(t, name, ep))
	}
	return newRigWith(t, p, Downstream{}, cs...)
}

// newRigWith starts the proxy for p with these clusters; every
// connection is served with info.
func newRigWith(t testing.TB, p *tcpv3.TcpProxy, info Downstream, clusters ...*clusterv3.Cluster) *rig {
	t.Helper()
	r := &rig{t: t, st: stats.New(), tr: &tunnel.Tracker{}, closed: make(chan struct{}, 1024)}
	r.cm = upstream.NewManager(r.st, nil)
	for _, c := range clusters {
		if _, err := r.cm.Add(c); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := Compile(p, r.st)
	if err != nil {
		t.Fatal(err)
	}
	r.cfg = cfg
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.ln = ln
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		env := Env{Clusters: r.cm, Tunnels: r.tr}
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go cfg.Serve(ctx, env, r, c, info, func() { r.closed <- struct{}{} })
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		cancel()
		sctx, scancel := context.WithTimeout(context.Background(), time.Second)
		defer scancel()
		r.tr.Shutdown(sctx)
		r.cm.Close()
	})
	return r
}

func staticCluster(t testing.TB, name, addr string) *clusterv3.Cluster {
	t.Helper()
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	pn, _ := strconv.Atoi(port)
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(2 * time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(pn)},
					}}},
				}},
			}}}},
		},
	}
}

// dial connects a client to the proxy.
func (r *rig) dial() *net.TCPConn {
	r.t.Helper()
	c, err := net.Dial("tcp", r.ln.Addr().String())
	if err != nil {
		r.t.Fatal(err)
	}
	r.t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(testTimeout))
	return c.(*net.TCPConn)
}

// waitClosed waits for n downstream connections to be accounted as gone.
func (r *rig) waitClosed(ctx context.Context, n int) {
	r.t.Helper()
	for range n {
		select {
		case <-r.closed:
		case <-ctx.Done():
			r.t.Fatal("downstream connection never released")
		}
	}
}

func (r *rig) stat(name string) int64 {
	r.t.Helper()
	v, ok := r.st.Get(name)
	if !ok {
		r.t.Fatalf("stat %s does not exist", name)
	}
	return v
}

// serve runs handle for every connection accepted on a new loopback
// listener until the test ends, and returns the listener's address.
func serve(t testing.TB, handle func(*net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(testTimeout))
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// echo copies back what it reads, then half-closes after the client's FIN.
func echo(c *net.TCPConn) {
	io.Copy(c, c)
	c.CloseWrite()
	io.Copy(io.Discard, c)
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

func TestEchoMiB(t *testing.T) {
	ctx := testCtx(t)
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "front", ClusterSpecifier: single("echo")}, map[string]string{"echo": serve(t, echo)})
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	c := r.dial()
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.CloseWrite() // the half-close must reach the echo server
		}
		werr <- err
	}()
	got, err := io.ReadAll(c) // EOF only after the echo server's half-close came back
	if err != nil {
		t.Fatal(err)
	}
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("echoed %d bytes, not the %d sent", len(got), len(payload))
	}
	c.Close()
	r.waitClosed(ctx, 1)
	for name, want := range map[string]int64{
		"tcp.front.downstream_cx_total":           1,
		"tcp.front.downstream_cx_rx_bytes_total":  1 << 20,
		"tcp.front.downstream_cx_tx_bytes_total":  1 << 20,
		"tcp.front.downstream_cx_no_route":        0,
		"tcp.front.idle_timeout":                  0,
		"tcp.front.upstream_flush_total":          0,
		"tcp.front.upstream_flush_active":         0,
		"cluster.echo.upstream_cx_total":          1,
		"cluster.echo.upstream_cx_rx_bytes_total": 1 << 20,
		"cluster.echo.upstream_cx_tx_bytes_total": 1 << 20,
		"cluster.echo.upstream_cx_active":         0,
	} {
		if got := r.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestHalfCloseBothWays: the client half-closes first and still reads the
// server's answer; then the server's FIN reaches the client.
func TestHalfCloseBothWays(t *testing.T) {
	ctx := testCtx(t)
	addr := serve(t, func(c *net.TCPConn) {
		got, err := io.ReadAll(c) // until the client's FIN
		if err != nil {
			return
		}
		c.Write(append([]byte("got "), got...))
		c.CloseWrite()
		io.Copy(io.Discard, c)
	})
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "hc", ClusterSpecifier: single("up")}, map[string]string{"up": addr})
	c := r.dial()
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != "got hello" {
		t.Fatalf("read %q", got)
	}
	c.Close()
	r.waitClosed(ctx, 1)
}

func TestWeightedClusters(t *testing.T) {
	ctx := testCtx(t)
	name := func(s string) func(*net.TCPConn) {
		return func(c *net.TCPConn) { c.Write([]byte(s)); c.CloseWrite(); io.Copy(io.Discard, c) }
	}
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "w", ClusterSpecifier: &tcpv3.TcpProxy_WeightedClusters{
		WeightedClusters: &tcpv3.TcpProxy_WeightedCluster{Clusters: []*tcpv3.TcpProxy_WeightedCluster_ClusterWeight{
			{Name: "a", Weight: 1}, {Name: "b", Weight: 3}}}}},
		map[string]string{"a": serve(t, name("a")), "b": serve(t, name("b"))})
	const n = 400
	count := map[string]int{}
	for range n {
		c := r.dial()
		got, err := io.ReadAll(c)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		count[string(got)]++
	}
	r.waitClosed(ctx, n)
	// b expects 300 (σ ≈ 8.7): 240..360 fails only on a broken pick.
	if count["a"]+count["b"] != n || count["b"] < 240 || count["b"] > 360 {
		t.Fatalf("distribution %v, want about a:100 b:300", count)
	}
	if got := r.stat("tcp.w.downstream_cx_total"); got != n {
		t.Errorf("downstream_cx_total = %d, want %d", got, n)
	}
}

func TestIdleTimeout(t *testing.T) {
	ctx := testCtx(t)
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "idle", ClusterSpecifier: single("echo"),
		IdleTimeout: durationpb.New(100 * time.Millisecond)}, map[string]string{"echo": serve(t, echo)})
	c := r.dial()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if n, err := c.Read(buf); err == nil {
		t.Fatalf("read %d bytes from an idle tunnel", n)
	}
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Errorf("closed after %v, before the idle timeout", d)
	}
	r.waitClosed(ctx, 1)
	if got := r.stat("tcp.idle.idle_timeout"); got != 1 {
		t.Errorf("idle_timeout = %d, want 1", got)
	}
}

func TestDeadCluster(t *testing.T) {
	ctx := testCtx(t)
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "dead", ClusterSpecifier: single("dead"),
		MaxConnectAttempts: wrapperspb.UInt32(3)}, map[string]string{"dead": deadAddr(t)})
	c := r.dial()
	n, err := c.Read(make([]byte, 1))
	if n != 0 || (err != io.EOF && !errors.Is(err, net.ErrClosed) && !isReset(err)) {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	r.waitClosed(ctx, 1)
	for name, want := range map[string]int64{
		"cluster.dead.upstream_cx_connect_attempts_exceeded": 1,
		"cluster.dead.upstream_cx_connect_fail":              3,
		"tcp.dead.downstream_cx_total":                       1,
	} {
		if got := r.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

// TestDeadClusterBackoff: with backoff_options each retry waits its draw
// (here the highest: just under base_interval, then twice that), and the
// attempts still end in upstream_cx_connect_attempts_exceeded.
func TestDeadClusterBackoff(t *testing.T) {
	defer func(d func(int64) int64) { draw = d }(draw)
	draw = highest
	ctx := testCtx(t)
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "dead", ClusterSpecifier: single("dead"),
		MaxConnectAttempts: wrapperspb.UInt32(3),
		BackoffOptions:     &corev3.BackoffStrategy{BaseInterval: durationpb.New(200 * time.Millisecond)}},
		map[string]string{"dead": deadAddr(t)})
	start := time.Now()
	c := r.dial()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	if d := time.Since(start); d < 600*time.Millisecond-2*time.Millisecond {
		t.Errorf("gave up after %v, before the two backoffs (≈600ms)", d)
	}
	r.waitClosed(ctx, 1)
	for name, want := range map[string]int64{
		"cluster.dead.upstream_cx_connect_attempts_exceeded": 1,
		"cluster.dead.upstream_cx_connect_fail":              3,
	} {
		if got := r.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}

func TestNoRoute(t *testing.T) {
	ctx := testCtx(t)
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "nr", ClusterSpecifier: single("missing")}, nil)
	c := r.dial()
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("read %d, %v; want the connection closed", n, err)
	}
	r.waitClosed(ctx, 1)
	if got := r.stat("tcp.nr.downstream_cx_no_route"); got != 1 {
		t.Errorf("downstream_cx_no_route = %d, want 1", got)
	}
}

// TestCloseGroupCuts: a tunnel is tagged with the owner Serve got, so a
// listener's drain can cut it.
func TestCloseGroupCuts(t *testing.T) {
	ctx := testCtx(t)
	r := newRig(t, &tcpv3.TcpProxy{StatPrefix: "g", ClusterSpecifier: single("echo")}, map[string]string{"echo": serve(t, echo)})
	c := r.dial()
	c.Write([]byte("x"))
	if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
		t.Fatal(err)
	}
	if n := r.tr.CloseGroup(r); n != 1 {
		t.Fatalf("CloseGroup cut %d tunnels, want 1", n)
	}
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("tunnel still open after CloseGroup")
	}
	r.waitClosed(ctx, 1)
}
