package upstream

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// origDstCluster is an ORIGINAL_DST cluster with original_dst_lb_config
// oc (none when nil).
func origDstCluster(name string, oc *clusterv3.Cluster_OriginalDstLbConfig) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST},
		LbPolicy:             clusterv3.Cluster_CLUSTER_PROVIDED,
	}
	if oc != nil {
		c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: oc}
	}
	return c
}

// withHeaders is a context whose LBContext answers from hdr.
func withHeaders(ctx context.Context, hdr map[string]string) context.Context {
	return WithLBContext(ctx, LBContext{Header: func(name string) (string, bool) {
		v, ok := hdr[name]
		return v, ok
	}})
}

// getVia sends a GET through c with ctx and returns the body.
func getVia(t *testing.T, ctx context.Context, c *Cluster, host string) string {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://placeholder/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if host != "" {
		req.Host = host
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// echoOnce dials through c with ctx and checks that the connection echoes.
func echoOnce(t *testing.T, ctx context.Context, c *Cluster) *Conn {
	t.Helper()
	conn, err := c.Dial(ctx)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	if _, err := conn.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo = %q, %v", buf, err)
	}
	return conn
}

func hostAddresses(c *Cluster) map[string]HostInfo {
	out := map[string]HostInfo{}
	for _, h := range c.Hosts() {
		out[h.Address] = h
	}
	return out
}

func TestOriginalDstByHeader(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	b1, b2 := hostOf(newBackend(t, whoami)), hostOf(newBackend(t, whoami))
	c := mustAdd(t, m, origDstCluster("od", &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}))
	if !c.UsesLBContext() {
		t.Fatal("UsesLBContext = false for an ORIGINAL_DST cluster")
	}
	select {
	case <-c.Ready():
	default:
		t.Fatal("an ORIGINAL_DST cluster is not ready at once")
	}
	wantStats(t, st, "od", map[string]int64{"membership_total": 0})

	for _, b := range []string{b1, b2, b1} {
		if got := getVia(t, withHeaders(ctx, map[string]string{"x-envoy-original-dst-host": b}), c, ""); got != b {
			t.Errorf("request for %s served by %s", b, got)
		}
	}
	hosts := hostAddresses(c)
	if len(hosts) != 2 {
		t.Fatalf("Hosts() = %+v, want the two destinations", c.Hosts())
	}
	if h := hosts[b1]; h.Hostname != "od"+b1 || h.RqTotal != 2 || h.CxTotal != 1 || !h.Healthy || h.Weight != 1 {
		t.Errorf("host %s = %+v, want hostname od%s, 2 requests over 1 kept-alive connection", b1, h, b1)
	}
	wantStats(t, st, "od", map[string]int64{
		"membership_total": 2, "membership_healthy": 2, "membership_change": 2,
		"upstream_rq_total": 3, "upstream_cx_total": 2, "original_dst_host_invalid": 0,
	})
}

func TestOriginalDstByAuthority(t *testing.T) {
	ctx := testCtx(t)
	m, _ := newTestManager(t, nil)
	backend := hostOf(newBackend(t, whoami))
	echo := echoServer(t)
	c := mustAdd(t, m, origDstCluster("auth", &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true, HttpHeaderName: ":authority"}))

	// The caller answers ":authority" with the request's Host, as the
	// router does for a CONNECT's target.
	req, _ := http.NewRequest(http.MethodGet, "http://placeholder/", nil)
	req.Host = backend
	lctx := WithLBContext(ctx, LBContext{Header: func(name string) (string, bool) {
		if name == ":authority" {
			return req.Host, true
		}
		return "", false
	}})
	if got := getVia(t, lctx, c, backend); got != backend {
		t.Errorf("served by %s, want %s", got, backend)
	}

	// A raw connection (CONNECT termination) by :authority.
	conn := echoOnce(t, withHeaders(ctx, map[string]string{":authority": echo}), c)
	if conn.HostAddress() != echo || conn.TCP() == nil {
		t.Errorf("HostAddress() = %q, TCP() = %v; want %s over TCP", conn.HostAddress(), conn.TCP(), echo)
	}
	conn.Close()
}

func TestOriginalDstByDownstreamLocalAddr(t *testing.T) {
	ctx := testCtx(t)
	m, _ := newTestManager(t, nil)
	echo := echoServer(t)
	other := closedPort(t)
	c := mustAdd(t, m, origDstCluster("local", nil))

	// Without use_http_header the header is never read.
	lc := LBContext{
		DownstreamLocalAddr: netip.MustParseAddrPort(echo),
		Header: func(string) (string, bool) {
			t.Error("header read without use_http_header")
			return other, true
		},
	}
	conn := echoOnce(t, WithLBContext(ctx, lc), c)
	if conn.HostAddress() != echo {
		t.Errorf("HostAddress() = %q, want %s", conn.HostAddress(), echo)
	}
	conn.Close()
}

func TestOriginalDstPortOverride(t *testing.T) {
	ctx := testCtx(t)
	m, _ := newTestManager(t, nil)
	echo := netip.MustParseAddrPort(echoServer(t))
	c := mustAdd(t, m, origDstCluster("port", &clusterv3.Cluster_OriginalDstLbConfig{
		UseHttpHeader:        true,
		HttpHeaderName:       "X-Dst", // matched lower-case, as Envoy's LowerCaseString
		UpstreamPortOverride: wrapperspb.UInt32(uint32(echo.Port())),
	}))
	wrongPort := netip.AddrPortFrom(echo.Addr(), 1).String()

	conn := echoOnce(t, withHeaders(ctx, map[string]string{"x-dst": wrongPort}), c)
	if conn.HostAddress() != echo.String() {
		t.Errorf("HostAddress() = %q, want the overridden port: %s", conn.HostAddress(), echo)
	}
	conn.Close()
	// The override applies to the downstream local address too.
	conn = echoOnce(t, WithLBContext(ctx, LBContext{DownstreamLocalAddr: netip.MustParseAddrPort(wrongPort)}), c)
	conn.Close()
	if n := len(c.Hosts()); n != 1 {
		t.Errorf("%d hosts, want 1: both destinations are the same after the override", n)
	}
}

func TestOriginalDstNoDestination(t *testing.T) {
	echo := echoServer(t)
	for _, tc := range []struct {
		name        string
		lc          *LBContext // nil: no LBContext at all
		wantInvalid int64
		wantOK      bool // the fallback to the downstream local address applies
	}{
		{name: "no context"},
		{name: "empty context", lc: &LBContext{}},
		{name: "header missing", lc: &LBContext{Header: func(string) (string, bool) { return "", false }}},
		{name: "hostname, not resolved", lc: hdr("localhost:80"), wantInvalid: 1},
		{name: "no port", lc: hdr("127.0.0.1"), wantInvalid: 1},
		{name: "bad port", lc: hdr("127.0.0.1:65536"), wantInvalid: 1},
		{name: "IPv6 without brackets", lc: hdr("::1:80"), wantInvalid: 1},
		{name: "empty value", lc: hdr(""), wantInvalid: 1},
		{
			name:        "invalid header falls back to the downstream local address",
			lc:          &LBContext{Header: hdr("nope").Header, DownstreamLocalAddr: netip.MustParseAddrPort(echo)},
			wantInvalid: 1,
			wantOK:      true,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			m, st := newTestManager(t, nil)
			c := mustAdd(t, m, origDstCluster("none", &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}))
			dctx := ctx
			if tc.lc != nil {
				dctx = WithLBContext(ctx, *tc.lc)
			}
			conn, err := c.Dial(dctx)
			if tc.wantOK {
				if err != nil {
					t.Fatalf("Dial: %v", err)
				}
				conn.Close()
			} else if !errors.Is(err, ErrNoHealthyUpstream) {
				t.Fatalf("Dial error = %v, want ErrNoHealthyUpstream", err)
			}
			none := int64(1)
			if tc.wantOK {
				none = 0
			}
			wantStats(t, st, "none", map[string]int64{
				"original_dst_host_invalid": tc.wantInvalid, "upstream_cx_none_healthy": none, "upstream_cx_total": 1 - none,
			})
		})
	}
}

// hdr is an LBContext whose x-envoy-original-dst-host is v.
func hdr(v string) *LBContext {
	return &LBContext{Header: func(name string) (string, bool) { return v, name == defaultOriginalDstHeader }}
}

func TestOriginalDstCleanup(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	echo := echoServer(t)
	pb := origDstCluster("clean", nil)
	pb.CleanupInterval = dur(time.Hour) // rounds are run by hand below
	c := mustAdd(t, m, pb)
	lctx := WithLBContext(ctx, LBContext{DownstreamLocalAddr: netip.MustParseAddrPort(echo)})

	conn := echoOnce(t, lctx, c)
	c.cleanupOriginalDst() // chosen since the last round: kept, mark cleared
	c.cleanupOriginalDst() // unmarked but connected: kept
	if n := len(c.Hosts()); n != 1 {
		t.Fatalf("%d hosts while a connection is open, want 1", n)
	}
	h := hostAt(c, echo)
	conn.Close()
	c.cleanupOriginalDst() // unused and idle: removed
	if n := len(c.Hosts()); n != 0 {
		t.Fatalf("%d hosts after cleanup, want 0", n)
	}
	if !h.removed.Load() {
		t.Error("the removed host is not marked removed")
	}
	wantStats(t, st, "clean", map[string]int64{"membership_total": 0, "membership_change": 2})

	// The destination comes back as a new host.
	conn = echoOnce(t, lctx, c)
	conn.Close()
	if hostAt(c, echo) == h {
		t.Error("the removed host object was reused")
	}
	wantStats(t, st, "clean", map[string]int64{"membership_total": 1, "membership_change": 3})
}

func TestOriginalDstCleanupInterval(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	echo := echoServer(t)
	pb := origDstCluster("interval", nil)
	pb.CleanupInterval = dur(10 * time.Millisecond)
	c := mustAdd(t, m, pb)
	conn := echoOnce(t, WithLBContext(ctx, LBContext{DownstreamLocalAddr: netip.MustParseAddrPort(echo)}), c)
	conn.Close()
	// Two rounds of the cleanup goroutine remove the host.
	waitStat(t, ctx, st, "cluster.interval.membership_total", 0)
	if n := len(c.Hosts()); n != 0 {
		t.Errorf("%d hosts, want 0", n)
	}
}

func TestOriginalDstIPv6(t *testing.T) {
	ctx := testCtx(t)
	m, _ := newTestManager(t, nil)
	l, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if conn, err := l.Accept(); err == nil {
			io.Copy(conn, conn)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	dst := l.Addr().String() // "[::1]:port"
	c := mustAdd(t, m, origDstCluster("v6", &clusterv3.Cluster_OriginalDstLbConfig{UseHttpHeader: true}))
	conn := echoOnce(t, withHeaders(ctx, map[string]string{defaultOriginalDstHeader: dst}), c)
	defer conn.Close()
	if conn.HostAddress() != dst {
		t.Errorf("HostAddress() = %q, want %s", conn.HostAddress(), dst)
	}
}
