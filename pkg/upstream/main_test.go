package upstream

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hopproxy/hop/pkg/stats"
)

// TestMain fails the package if goroutines started by this package, by
// net/http or by x/net/http2 (pools, connections, test servers) outlive the
// tests.
func TestMain(m *testing.M) {
	leakcheck.Main(m, "hop/pkg/upstream.", "net/http.", "golang.org/x/net/http2.")
}

const defaultTestTimeout = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	return ctx
}

// newTestManager returns a Manager closed at the end of the test.
func newTestManager(t *testing.T, resolve Resolver) (*Manager, *stats.Store) {
	t.Helper()
	st := stats.New()
	m := NewManagerWithOptions(st, nil, Options{Resolver: resolve})
	t.Cleanup(m.Close)
	return m, st
}

func mustAdd(t *testing.T, m *Manager, c *clusterv3.Cluster) *Cluster {
	t.Helper()
	cl, err := m.Add(c)
	if err != nil {
		t.Fatalf("Add: %v", err)
	}
	return cl
}

func statValue(t *testing.T, st *stats.Store, name string) int64 {
	t.Helper()
	v, ok := st.Get(name)
	if !ok {
		t.Fatalf("stat %q does not exist", name)
	}
	return v
}

func wantStats(t *testing.T, st *stats.Store, cluster string, want map[string]int64) {
	t.Helper()
	for name, w := range want {
		if got := statValue(t, st, "cluster."+cluster+"."+name); got != w {
			t.Errorf("cluster.%s.%s = %d, want %d", cluster, name, got, w)
		}
	}
}

// lbEndpoint is an lb_endpoint for address:port.
func lbEndpoint(address string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address:       address,
			PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
	}}}
}

// cluster builds a cluster of the given type with one locality holding eps.
func cluster(name string, typ clusterv3.Cluster_DiscoveryType, eps ...*endpointv3.LbEndpoint) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: typ},
	}
	if len(eps) > 0 {
		c.LoadAssignment = &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}},
		}
	}
	return c
}

// staticCluster is a STATIC cluster over "ip:port" addresses.
func staticCluster(t *testing.T, name string, addrs ...string) *clusterv3.Cluster {
	t.Helper()
	var eps []*endpointv3.LbEndpoint
	for _, a := range addrs {
		ap := netip.MustParseAddrPort(a)
		eps = append(eps, lbEndpoint(ap.Addr().String(), uint32(ap.Port())))
	}
	return cluster(name, clusterv3.Cluster_STATIC, eps...)
}

func dur(d time.Duration) *durationpb.Duration { return durationpb.New(d) }

// whoami answers every request with the local address it was accepted on,
// which tells the test which backend served it.
var whoami = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	io.WriteString(w, r.Context().Value(http.LocalAddrContextKey).(net.Addr).String())
})

// newBackend starts a loopback HTTP server closed at the end of the test.
func newBackend(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

func hostOf(s *httptest.Server) string { return s.Listener.Addr().String() }

// backendsOnSamePort starts one whoami server per loopback IP, all on the
// same port, as DNS clusters need (the port comes from the config).
func backendsOnSamePort(t *testing.T, ips ...string) (uint32, []*httptest.Server) {
	t.Helper()
	for attempt := 0; attempt < 10; attempt++ {
		first, err := net.Listen("tcp", net.JoinHostPort(ips[0], "0"))
		if err != nil {
			t.Fatal(err)
		}
		port := first.Addr().(*net.TCPAddr).Port
		ls := []net.Listener{first}
		for _, ip := range ips[1:] {
			l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(port)))
			if err != nil {
				break
			}
			ls = append(ls, l)
		}
		if len(ls) != len(ips) {
			for _, l := range ls {
				l.Close()
			}
			continue
		}
		var servers []*httptest.Server
		for _, l := range ls {
			s := httptest.NewUnstartedServer(whoami)
			s.Listener.Close()
			s.Listener = l
			s.Start()
			t.Cleanup(s.Close)
			servers = append(servers, s)
		}
		return uint32(port), servers
	}
	t.Fatal("could not find a port free on every loopback address")
	return 0, nil
}

// get sends a GET through c and returns the body.
func get(t *testing.T, ctx context.Context, c *Cluster) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://placeholder/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return string(b)
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
