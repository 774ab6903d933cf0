package upstream

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// edsCluster is an EDS cluster fed over ADS.
func edsCluster(name string) *clusterv3.Cluster {
	c := cluster(name, clusterv3.Cluster_EDS)
	c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}}
	return c
}

// assignment is a ClusterLoadAssignment for name with one locality.
func assignment(name string, eps ...*endpointv3.LbEndpoint) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: eps}},
	}
}

// ep is an lb_endpoint for an "ip:port" address.
func ep(addr string) *endpointv3.LbEndpoint {
	ap := netip.MustParseAddrPort(addr)
	return lbEndpoint(ap.Addr().String(), uint32(ap.Port()))
}

func weighted(e *endpointv3.LbEndpoint, w uint32) *endpointv3.LbEndpoint {
	e.LoadBalancingWeight = wrapperspb.UInt32(w)
	return e
}

func withHealth(e *endpointv3.LbEndpoint, h corev3.HealthStatus) *endpointv3.LbEndpoint {
	e.HealthStatus = h
	return e
}

func mustSet(t *testing.T, m *Manager, name string, cla *endpointv3.ClusterLoadAssignment) {
	t.Helper()
	if err := m.SetEndpoints(name, cla); err != nil {
		t.Fatalf("SetEndpoints: %v", err)
	}
}

// hostAt returns the host object currently published for addr, or nil.
func hostAt(c *Cluster, addr string) *host {
	for _, h := range c.set.Load().hosts {
		if h.key == addr {
			return h
		}
	}
	return nil
}

// countingBackend is a whoami server that counts the connections it
// accepts and reports each one that closes.
type countingBackend struct {
	*httptest.Server
	accepted atomic.Int32
	closed   chan struct{}
}

func newCountingBackend(t *testing.T, h http.Handler) *countingBackend {
	t.Helper()
	b := &countingBackend{closed: make(chan struct{}, 64)}
	s := httptest.NewUnstartedServer(h)
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		switch st {
		case http.StateNew:
			b.accepted.Add(1)
		case http.StateClosed:
			select {
			case b.closed <- struct{}{}:
			default:
			}
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	b.Server = s
	return b
}

func (b *countingBackend) waitClosed(t *testing.T, ctx context.Context) {
	t.Helper()
	select {
	case <-b.closed:
	case <-ctx.Done():
		t.Fatalf("backend %s: no connection closed", hostOf(b.Server))
	}
}

// served sends n requests and counts the backends that answered.
func served(t *testing.T, ctx context.Context, c *Cluster, n int) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < n; i++ {
		out[get(t, ctx, c)]++
	}
	return out
}

func TestEDSRoutesToEndpoints(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	a, b := hostOf(newBackend(t, whoami)), hostOf(newBackend(t, whoami))
	pb := edsCluster("eds")
	pb.EdsClusterConfig.ServiceName = "svc"
	c := mustAdd(t, m, pb)
	if got := c.EDSServiceName(); got != "svc" {
		t.Errorf("EDSServiceName = %q, want svc", got)
	}
	mustSet(t, m, "eds", assignment("svc", ep(a), ep(b)))
	if got, want := hostAddrs(c), []string{a, b}; !slices.Equal(got, want) {
		t.Errorf("hosts = %v, want %v", got, want)
	}
	if got := served(t, ctx, c, 4); got[a] != 2 || got[b] != 2 {
		t.Errorf("served %v, want 2 requests each for %s and %s", got, a, b)
	}
	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if got := conn.HostAddress(); got != a && got != b {
		t.Errorf("Dial went to %s, want one of the endpoints", got)
	}
	conn.Close()
	wantStats(t, st, "eds", map[string]int64{"membership_total": 2, "membership_healthy": 2, "upstream_rq_total": 4})
}

func TestEDSUpdateInPlace(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	ba, bb := newCountingBackend(t, whoami), newCountingBackend(t, whoami)
	a, b, cAddr := hostOf(ba.Server), hostOf(bb.Server), hostOf(newBackend(t, whoami))
	c := mustAdd(t, m, edsCluster("eds"))
	mustSet(t, m, "eds", assignment("eds", ep(a), ep(b)))
	if got := served(t, ctx, c, 2); got[a] != 1 || got[b] != 1 {
		t.Fatalf("served %v, want one request each", got)
	}
	kept := hostAt(c, a)
	wantStats(t, st, "eds", map[string]int64{"upstream_cx_active": 2, "membership_change": 1})

	// a stays (with a new hostname and locality), b leaves, cAddr arrives.
	keptEp := ep(a)
	keptEp.GetEndpoint().Hostname = "a.example"
	upd := assignment("eds", keptEp, ep(cAddr))
	upd.Endpoints[0].Locality = &corev3.Locality{Region: "r", Zone: "z"}
	mustSet(t, m, "eds", upd)

	bb.waitClosed(t, ctx) // b's idle keep-alive connection was closed
	wantStats(t, st, "eds", map[string]int64{
		"upstream_cx_active": 1, "upstream_cx_destroy": 1, "membership_change": 2, "membership_total": 2,
	})
	if hostAt(c, a) != kept {
		t.Error("the kept endpoint got a new host object")
	}
	hs := c.Hosts()
	if len(hs) != 2 || hs[0].Address != a || hs[0].Hostname != "a.example" || hs[0].Zone != "z" ||
		hs[0].RqTotal != 1 || hs[0].CxTotal != 1 || hs[1].Address != cAddr || hs[1].Zone != "z" {
		t.Errorf("Hosts() = %+v, want %s (a.example, zone z, its counters kept) then %s", hs, a, cAddr)
	}
	if got := served(t, ctx, c, 4); got[a] != 2 || got[cAddr] != 2 {
		t.Errorf("served %v, want 2 requests each for %s and %s", got, a, cAddr)
	}
	if n := ba.accepted.Load(); n != 1 {
		t.Errorf("backend %s accepted %d connections, want 1: the kept host's pooled connection is reused", a, n)
	}
	if n := bb.accepted.Load(); n != 1 {
		t.Errorf("removed backend %s accepted %d connections, want 1", b, n)
	}
}

func TestEDSRemovalKeepsStreamsInFlight(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	started, release := make(chan struct{}), make(chan struct{})
	bb := newCountingBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(started)
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		io.WriteString(w, "ok")
	}))
	released := false
	t.Cleanup(func() {
		if !released {
			close(release)
		}
	})
	b, other := hostOf(bb.Server), hostOf(newBackend(t, whoami))
	c := mustAdd(t, m, edsCluster("eds"))
	mustSet(t, m, "eds", assignment("eds", ep(b)))

	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/slow", nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(body), err}
	}()
	select {
	case <-started:
	case <-ctx.Done():
		t.Fatal("the slow request never reached the backend")
	}
	tunnel, err := c.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer tunnel.Close()

	mustSet(t, m, "eds", assignment("eds", ep(other))) // b leaves
	released = true
	close(release)
	if r := <-done; r.err != nil || r.body != "ok" {
		t.Errorf("request in flight across the removal = %q, %v; want ok", r.body, r.err)
	}
	// The Dial'ed connection to the removed host still works.
	if _, err := io.WriteString(tunnel, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatalf("write on the Dial'ed connection: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(tunnel), nil)
	if err != nil {
		t.Fatalf("read on the Dial'ed connection: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("status over the Dial'ed connection = %d, want 200", resp.StatusCode)
	}
	// The removed host's pooled connection closed once its request ended.
	bb.waitClosed(t, ctx)
	tunnel.Close()
	bb.waitClosed(t, ctx)
	wantStats(t, st, "eds", map[string]int64{"upstream_cx_active": 0, "upstream_cx_destroy": 2})
}

func TestEDSWeightsAndHealth(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	a, b := hostOf(newBackend(t, whoami)), hostOf(newBackend(t, whoami))
	c := mustAdd(t, m, edsCluster("eds"))

	mustSet(t, m, "eds", assignment("eds", weighted(ep(a), 3), weighted(ep(b), 1)))
	if got := served(t, ctx, c, 8); got[a] != 6 || got[b] != 2 {
		t.Errorf("weights 3:1 served %v, want 6 and 2", got)
	}
	ha, hb := hostAt(c, a), hostAt(c, b)

	// New weights apply to the same hosts and change no membership.
	mustSet(t, m, "eds", assignment("eds", weighted(ep(a), 1), weighted(ep(b), 3)))
	if hostAt(c, a) != ha || hostAt(c, b) != hb {
		t.Error("a weight change replaced host objects")
	}
	if got := served(t, ctx, c, 8); got[a] != 2 || got[b] != 6 {
		t.Errorf("weights 1:3 served %v, want 2 and 6", got)
	}
	wantStats(t, st, "eds", map[string]int64{"membership_change": 1, "membership_healthy": 2})

	// An UNHEALTHY host takes no traffic (one of two healthy is not below
	// the 50% panic threshold).
	mustSet(t, m, "eds", assignment("eds", ep(a), withHealth(ep(b), corev3.HealthStatus_UNHEALTHY)))
	if got := served(t, ctx, c, 4); got[a] != 4 {
		t.Errorf("with %s unhealthy, served %v; want all 4 by %s", b, got, a)
	}
	hs := c.Hosts()
	if len(hs) != 2 || hs[1].HealthStatus != "UNHEALTHY" || hs[1].Healthy || hs[1].Weight != 1 || !hs[0].Healthy {
		t.Errorf("Hosts() = %+v", hs)
	}
	wantStats(t, st, "eds", map[string]int64{"membership_change": 1, "membership_total": 2, "membership_healthy": 1})

	// Healthy again.
	mustSet(t, m, "eds", assignment("eds", ep(a), withHealth(ep(b), corev3.HealthStatus_HEALTHY)))
	if got := served(t, ctx, c, 4); got[a] != 2 || got[b] != 2 {
		t.Errorf("both healthy again, served %v; want 2 each", got)
	}
	wantStats(t, st, "eds", map[string]int64{"membership_healthy": 2})
}

func TestEDSNotReadyUntilSetEndpoints(t *testing.T) {
	ctx := testCtx(t)
	m, _ := newTestManager(t, nil)
	a := hostOf(newBackend(t, whoami))
	c := mustAdd(t, m, edsCluster("eds"))
	select {
	case <-c.Ready():
		t.Fatal("an EDS cluster is ready before SetEndpoints")
	default:
	}
	// With no hosts yet, a ready cluster would fail at once with
	// ErrNoHealthyUpstream; a waiting one gives up with the caller.
	cancelled, cancel := context.WithCancel(ctx)
	cancel()
	req, _ := http.NewRequestWithContext(cancelled, http.MethodGet, "http://x/", nil)
	if _, err := c.RoundTrip(req); !errors.Is(err, context.Canceled) {
		t.Errorf("RoundTrip before SetEndpoints = %v, want context.Canceled", err)
	}
	if _, err := c.Dial(cancelled); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial before SetEndpoints = %v, want context.Canceled", err)
	}
	// A failed SetEndpoints does not make it ready.
	if err := m.SetEndpoints("eds", assignment("eds", lbEndpoint("not-an-ip", 80))); err == nil {
		t.Fatal("SetEndpoints with a hostname succeeded")
	}
	select {
	case <-c.Ready():
		t.Fatal("a failed SetEndpoints made the cluster ready")
	default:
	}

	body := make(chan string, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
		resp, err := c.RoundTrip(req)
		if err != nil {
			body <- "error: " + err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body <- string(b)
	}()
	mustSet(t, m, "eds", assignment("eds", ep(a)))
	select {
	case got := <-body:
		if got != a {
			t.Errorf("waiting request got %q, want it served by %s", got, a)
		}
	case <-ctx.Done():
		t.Fatal("the waiting request never finished")
	}
	select {
	case <-c.Ready():
	default:
		t.Error("Ready() not closed after SetEndpoints")
	}

	// nil: ready, with no hosts.
	empty := mustAdd(t, m, edsCluster("empty"))
	mustSet(t, m, "empty", nil)
	select {
	case <-empty.Ready():
	default:
		t.Fatal("SetEndpoints(nil) did not make the cluster ready")
	}
	if _, err := empty.Dial(ctx); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("Dial with no endpoints = %v, want ErrNoHealthyUpstream", err)
	}
}

func TestEDSMembership(t *testing.T) {
	m, st := newTestManager(t, nil)
	c := mustAdd(t, m, edsCluster("eds"))
	x, y, z := "127.0.0.1:1001", "127.0.0.1:1002", "[::1]:1003"
	steps := []struct {
		name                 string
		cla                  *endpointv3.ClusterLoadAssignment
		hosts                []string
		total, healthy, chng int64
	}{
		{"first", assignment("eds", ep(x), ep(y)), []string{x, y}, 2, 2, 1},
		{"same", assignment("eds", ep(x), ep(y)), []string{x, y}, 2, 2, 1},
		{"reordered", assignment("eds", ep(y), ep(x)), []string{y, x}, 2, 2, 1},
		{"health only", assignment("eds", ep(y), withHealth(ep(x), corev3.HealthStatus_DRAINING)), []string{y, x}, 2, 1, 1},
		{"added", assignment("eds", ep(y), ep(x), ep(z)), []string{y, x, z}, 3, 3, 2},
		{"duplicate keeps the first", assignment("eds", ep(x), weighted(ep(x), 5)), []string{x}, 1, 1, 3},
		{"nil", nil, nil, 0, 0, 4},
	}
	for _, s := range steps {
		mustSet(t, m, "eds", s.cla)
		if got := hostAddrs(c); !slices.Equal(got, s.hosts) {
			t.Errorf("%s: hosts = %v, want %v", s.name, got, s.hosts)
		}
		wantStats(t, st, "eds", map[string]int64{"membership_total": s.total, "membership_healthy": s.healthy, "membership_change": s.chng})
		if s.name == "duplicate keeps the first" {
			if hs := c.Hosts(); hs[0].Weight != 1 {
				t.Errorf("duplicate address: weight %d, want the first lb_endpoint's 1", hs[0].Weight)
			}
		}
	}
}

func TestEDSAddReplace(t *testing.T) {
	m, _ := newTestManager(t, nil)
	pb := edsCluster("eds")
	c1 := mustAdd(t, m, pb)
	mustSet(t, m, "eds", assignment("eds", ep("127.0.0.1:1001")))
	if c := mustAdd(t, m, proto.Clone(pb).(*clusterv3.Cluster)); c != c1 || len(c.Hosts()) != 1 {
		t.Fatal("Add of an equal EDS cluster did not keep the cluster and its endpoints")
	}
	changed := proto.Clone(pb).(*clusterv3.Cluster)
	changed.ConnectTimeout = dur(7e9)
	c2 := mustAdd(t, m, changed)
	select {
	case <-c2.Ready():
		t.Fatal("a replacing EDS cluster is ready before SetEndpoints")
	default:
	}
	if len(c2.Hosts()) != 0 {
		t.Errorf("a replacing EDS cluster starts with hosts %v", c2.Hosts())
	}
	mustSet(t, m, "eds", assignment("eds", ep("127.0.0.1:1002")))
	if got := hostAddrs(c2); !slices.Equal(got, []string{"127.0.0.1:1002"}) {
		t.Errorf("new cluster hosts = %v", got)
	}
	if got := hostAddrs(c1); !slices.Equal(got, []string{"127.0.0.1:1001"}) {
		t.Errorf("retired cluster hosts = %v, want its last set", got)
	}
}
