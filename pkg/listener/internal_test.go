package listener

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/hopproxy/hop/pkg/filter"
	filterrouter "github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// internalFixture is a listener manager wired to a cluster manager the way
// pkg/dataplane wires them: clusters reach internal listeners through
// Manager.DialInternal. Cluster "echo" is a TCP echo server.
type internalFixture struct {
	m   *Manager
	cm  *upstream.Manager
	st  *stats.Store
	reg *filter.Registry
}

func newInternalFixture(t *testing.T, drain time.Duration) *internalFixture {
	t.Helper()
	checkNoLeaks(t)
	f := &internalFixture{st: stats.New(), reg: filter.NewRegistry()}
	f.reg.Register(filterrouter.Builder{})
	f.cm = upstream.NewManagerWithOptions(f.st, nil, upstream.Options{
		InternalDial: func(ctx context.Context, name string) (net.Conn, error) { return f.m.DialInternal(ctx, name) },
	})
	tr := &tunnel.Tracker{}
	f.m = New(slog.New(slog.DiscardHandler), f.st, &hcm.Env{Clusters: f.cm, Tunnels: tr}, drain)

	echoLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	echoDone := make(chan struct{})
	go func() {
		defer close(echoDone)
		for {
			c, err := echoLn.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				io.Copy(c, c)
			}()
		}
	}()
	port := uint32(echoLn.Addr().(*net.TCPAddr).Port)
	f.addCluster(t, "echo", nil, &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port}}}})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		f.cm.Close() // first: pooled HTTP/2 connections would hold the server's shutdown
		f.m.Shutdown(ctx)
		tr.Shutdown(ctx)
		echoLn.Close()
		<-echoDone
	})
	return f
}

// addCluster adds a STATIC cluster with one endpoint at addr.
func (f *internalFixture) addCluster(t *testing.T, name string, opts map[string]*anypb.Any, addr *corev3.Address) *upstream.Cluster {
	t.Helper()
	c, err := f.cm.Add(&clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		TypedExtensionProtocolOptions: opts,
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}}}},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// internalAddress is an envoy_internal_address naming listener.
func internalAddress(listener string) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_EnvoyInternalAddress{EnvoyInternalAddress: &corev3.EnvoyInternalAddress{
		AddressNameSpecifier: &corev3.EnvoyInternalAddress_ServerListenerName{ServerListenerName: listener},
	}}}
}

// internalListenerYAML is an internal listener called name with the given
// filter chain fields.
func (f *internalFixture) listener(t *testing.T, name, chain string) *snapshot.Listener {
	t.Helper()
	l, err := compileListenerYAML("name: "+name+"\ninternal_listener: {}\nfilter_chains: [{"+chain+"}]\n", f.reg, f.st)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func (f *internalFixture) reconcile(t *testing.T, ls ...*snapshot.Listener) {
	t.Helper()
	if err := f.m.Reconcile(ls); err != nil {
		t.Fatal(err)
	}
}

func (f *internalFixture) stat(t *testing.T, name string) int64 {
	t.Helper()
	v, ok := f.st.Get(name)
	if !ok {
		t.Fatalf("no stat %s", name)
	}
	return v
}

func (f *internalFixture) waitStat(t *testing.T, name string, want int64) {
	t.Helper()
	waitStat(t, &testListener{st: f.st}, name, want)
}

// directResponse is an HCM chain answering 200 with body.
func directResponse(body string) string {
	return `filters: [{name: hcm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
  stat_prefix: inner,
  route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "` + body + `"}}}]}]},
  http_filters: [{name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]`
}

func getBody(t *testing.T, c *upstream.Cluster) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	req.Host = "app.example"
	res, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// TestInternalListenerHCM: an internal listener's connection manager
// serves connections from DialInternal and from clusters, over HTTP/1.1
// and HTTP/2, and counts them under listener.envoy_internal_<name>.
func TestInternalListenerHCM(t *testing.T) {
	f := newInternalFixture(t, time.Second)
	f.reconcile(t, f.listener(t, "inner", directResponse("Hello from inside")))
	if got := f.m.Addr("inner"); got == nil || got.String() != "envoy://inner/" || got.Network() != "envoy_internal" {
		t.Fatalf("Addr(inner) = %v", got)
	}
	if got := f.m.Names()["inner"]; got != "envoy://inner/" {
		t.Errorf("Names()[inner] = %q", got)
	}

	c, err := f.m.DialInternal(testCtx(t), "inner")
	if err != nil {
		t.Fatalf("DialInternal: %v", err)
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "Hello from inside" {
		t.Fatalf("GET over DialInternal: %d %q", res.StatusCode, body)
	}
	c.Close()

	h1 := f.addCluster(t, "inner_h1", nil, internalAddress("inner"))
	h2 := f.addCluster(t, "inner_h2", explicitH2(t), internalAddress("inner"))
	for _, c := range []*upstream.Cluster{h1, h2, h1, h2} {
		if code, body := getBody(t, c); code != 200 || body != "Hello from inside" {
			t.Fatalf("%s: %d %q", c.Name(), code, body)
		}
	}
	for name, want := range map[string]int64{
		"listener.envoy_internal_inner.downstream_cx_total": 3, // one raw dial, one pooled connection per cluster
		"http.inner.downstream_cx_http1_total":              2,
		"http.inner.downstream_cx_http2_total":              1,
		"http.inner.downstream_rq_total":                    5,
		"cluster.inner_h1.upstream_cx_total":                1,
		"cluster.inner_h2.upstream_cx_total":                1,
	} {
		if got := f.stat(t, name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
}

func explicitH2(t *testing.T) map[string]*anypb.Any {
	t.Helper()
	a, err := anypb.New(&httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": a}
}

// TestInternalListenerTCPProxy: a tcp_proxy internal listener reached
// through a cluster carries 1 MiB each way and passes the half-close on.
func TestInternalListenerTCPProxy(t *testing.T) {
	f := newInternalFixture(t, time.Second)
	f.reconcile(t, f.listener(t, "inner", tcpProxyFilter))
	c := f.addCluster(t, "to_inner", nil, internalAddress("inner"))
	conn, err := c.Dial(testCtx(t))
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := conn.Write(payload)
		if err == nil {
			err = conn.CloseWrite() // the echo sees EOF only if the half-close crosses both proxies
		}
		werr <- err
	}()
	got, err := io.ReadAll(conn)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes back, not the 1 MiB sent", len(got))
	}
	conn.Close()
	f.waitStat(t, "listener.envoy_internal_inner.downstream_cx_active", 0)
	if got := f.stat(t, "cluster.echo.upstream_cx_total"); got != 1 {
		t.Errorf("cluster.echo.upstream_cx_total = %d, want 1", got)
	}
}

// TestInternalListenerRemovalAndUpdate: an update serves new connections
// with the new chain; a removed internal listener refuses new connections
// (a 503 connect failure for clusters) and drains the open ones: the
// connection manager closes its idle connection, a tcp_proxy connection
// goes on until the drain time ends.
func TestInternalListenerRemovalAndUpdate(t *testing.T) {
	f := newInternalFixture(t, 300*time.Millisecond)
	pipe := f.listener(t, "pipe", tcpProxyFilter)
	f.reconcile(t, f.listener(t, "inner", directResponse("v1")), pipe)
	c := f.addCluster(t, "to_inner", nil, internalAddress("inner"))
	if _, body := getBody(t, c); body != "v1" {
		t.Fatalf("body %q, want v1", body)
	}
	f.reconcile(t, f.listener(t, "inner", directResponse("v2")), pipe)
	if _, body := getBody(t, c); body != "v2" {
		t.Fatalf("after the update: body %q, want v2", body)
	}
	if got := f.stat(t, "listener_manager.listener_modified"); got != 1 {
		t.Errorf("listener_modified = %d, want 1", got)
	}

	idle, err := f.m.DialInternal(testCtx(t), "inner")
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetDeadline(time.Now().Add(10 * time.Second))
	expectHTTP1Body(t, idle, "v2")
	tunnel, err := f.m.DialInternal(testCtx(t), "pipe")
	if err != nil {
		t.Fatal(err)
	}
	defer tunnel.Close()
	tunnel.SetDeadline(time.Now().Add(10 * time.Second))
	echoOnce(t, tunnel, "before")

	f.reconcile(t) // both removed
	for _, name := range []string{"inner", "pipe"} {
		if _, err := f.m.DialInternal(testCtx(t), name); !errors.Is(err, upstream.ErrNoInternalListener) {
			t.Fatalf("DialInternal(%s) after removal: %v, want ErrNoInternalListener", name, err)
		}
	}
	_, err = c.Dial(testCtx(t))
	var ce *upstream.ConnectError
	if !errors.As(err, &ce) || ce.StatusCode() != http.StatusServiceUnavailable {
		t.Fatalf("Dial after removal: %v, want a 503 connect failure", err)
	}
	echoOnce(t, tunnel, "draining") // still open right after the removal
	if err := closedByPeer(idle); err != nil {
		t.Fatalf("idle HTTP connection not closed by the drain: %v", err)
	}
	if err := closedByPeer(tunnel); err != nil {
		t.Fatalf("tcp_proxy connection not cut at the end of the drain: %v", err)
	}
	if got := f.stat(t, "listener_manager.listener_removed"); got != 2 {
		t.Errorf("listener_removed = %d, want 2", got)
	}
	f.waitStat(t, "listener.envoy_internal_pipe.downstream_cx_active", 0)
}

func expectHTTP1Body(t *testing.T, c net.Conn, want string) {
	t.Helper()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
	res, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || string(body) != want {
		t.Fatalf("got %d %q, want 200 %q", res.StatusCode, body, want)
	}
}

// TestDialInternalUnknown: no listener, or a TCP listener of that name,
// is no internal listener.
func TestDialInternalUnknown(t *testing.T) {
	f := newInternalFixture(t, time.Second)
	l, err := compileListenerYAML("name: tcp\naddress: {socket_address: {address: 127.0.0.1, port_value: 0}}\nfilter_chains: [{"+tcpProxyFilter+"}]\n", f.reg, f.st)
	if err != nil {
		t.Fatal(err)
	}
	f.reconcile(t, l)
	for _, name := range []string{"nope", "tcp"} {
		if _, err := f.m.DialInternal(testCtx(t), name); !errors.Is(err, upstream.ErrNoInternalListener) {
			t.Errorf("DialInternal(%q) = %v, want ErrNoInternalListener", name, err)
		}
	}
}
