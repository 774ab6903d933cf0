package upstream

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func TestRoundRobinHitsEveryBackend(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, hostOf(newBackend(t, whoami)))
	}
	c := mustAdd(t, m, staticCluster(t, "rr", addrs...))

	for round := 1; round <= 2; round++ {
		seen := map[string]int{}
		for i := 0; i < 3; i++ {
			seen[get(t, ctx, c)]++
		}
		for _, a := range addrs {
			if seen[a] != 1 {
				t.Errorf("round %d: backend %s served %d of 3 requests, want 1 (all: %v)", round, a, seen[a], seen)
			}
		}
	}
	wantStats(t, st, "rr", map[string]int64{
		"upstream_rq_total": 6, "upstream_rq_active": 0, "upstream_cx_total": 3,
		"membership_total": 3, "membership_healthy": 3,
	})
}

func TestRandomUsesEveryBackend(t *testing.T) {
	ctx := testCtx(t)
	m, _ := newTestManager(t, nil)
	var addrs []string
	for i := 0; i < 3; i++ {
		addrs = append(addrs, hostOf(newBackend(t, whoami)))
	}
	pb := staticCluster(t, "random", addrs...)
	pb.LbPolicy = clusterv3.Cluster_RANDOM
	c := mustAdd(t, m, pb)
	seen := map[string]int{}
	for i := 0; i < 200; i++ { // P(a backend is never chosen) = 3·(2/3)^200 ≈ 1e-35
		seen[get(t, ctx, c)]++
	}
	if len(seen) != 3 {
		t.Errorf("RANDOM reached %d backends, want 3: %v", len(seen), seen)
	}
}

func TestKeepAliveReuse(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	c := mustAdd(t, m, staticCluster(t, "ka", hostOf(newBackend(t, whoami))))
	get(t, ctx, c)
	get(t, ctx, c)
	wantStats(t, st, "ka", map[string]int64{
		"upstream_cx_total": 1, "upstream_cx_active": 1, "upstream_rq_total": 2, "upstream_cx_destroy": 0,
	})
	if rx := statValue(t, st, "cluster.ka.upstream_cx_rx_bytes_total"); rx == 0 {
		t.Error("upstream_cx_rx_bytes_total = 0, want the response bytes")
	}
	hs := c.Hosts()
	if len(hs) != 1 || hs[0].RqTotal != 2 || hs[0].CxTotal != 1 || hs[0].CxActive != 1 {
		t.Errorf("Hosts() = %+v, want one host with RqTotal 2, CxTotal 1, CxActive 1", hs)
	}
	m.Close() // closes the idle connection
	wantStats(t, st, "ka", map[string]int64{"upstream_cx_active": 0, "upstream_cx_destroy": 1})
}

func TestRoundTripSendsRequestUnchanged(t *testing.T) {
	ctx := testCtx(t)
	m, _ := newTestManager(t, nil)
	got := make(chan *http.Request, 1)
	backend := newBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- r
		http.Redirect(w, r, "/elsewhere", http.StatusFound)
	}))
	c := mustAdd(t, m, staticCluster(t, "hdr", hostOf(backend)))

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://original.example/path?q=1", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = "virtual.example"
	req.Header.Set("X-Custom", "v")
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatalf("RoundTrip: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusFound {
		t.Errorf("status = %d, want 302 passed through, not followed", resp.StatusCode)
	}
	r := <-got
	if r.Host != "virtual.example" {
		t.Errorf("Host header = %q, want virtual.example", r.Host)
	}
	if r.URL.RequestURI() != "/path?q=1" {
		t.Errorf("request URI = %q, want /path?q=1", r.URL.RequestURI())
	}
	for _, h := range []string{"User-Agent", "Accept-Encoding"} {
		if v, ok := r.Header[h]; ok {
			t.Errorf("upstream got %s: %q, want no such header", h, v)
		}
	}
	if r.Header.Get("X-Custom") != "v" {
		t.Errorf("X-Custom = %q, want v", r.Header.Get("X-Custom"))
	}
	if req.URL.Host != hostOf(backend) {
		t.Errorf("req.URL.Host = %q, want the chosen endpoint %q", req.URL.Host, hostOf(backend))
	}
}

func TestConnectFailure(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	addr := closedPort(t)
	c := mustAdd(t, m, staticCluster(t, "refused", addr))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	_, err := c.RoundTrip(req)
	var ce *ConnectError
	if !errors.As(err, &ce) {
		t.Fatalf("RoundTrip error = %v (%T), want *ConnectError", err, err)
	}
	if ce.ResetReason != ResetRemoteConnectionFailure || ce.Reason != "delayed connect error: Connection refused" || ce.Host != addr {
		t.Errorf("ConnectError = %+v", ce)
	}
	wantBody := "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused"
	if ce.LocalReplyBody() != wantBody || ce.StatusCode() != 503 {
		t.Errorf("local reply = %d %q, want 503 %q", ce.StatusCode(), ce.LocalReplyBody(), wantBody)
	}
	wantStats(t, st, "refused", map[string]int64{
		"upstream_cx_connect_fail": 1, "upstream_cx_total": 1, "upstream_cx_active": 0,
		"upstream_cx_destroy": 1, "upstream_rq_total": 0, "upstream_rq_active": 0,
		"upstream_cx_connect_timeout": 0,
	})
	if hs := c.Hosts(); hs[0].CxConnectFail != 1 {
		t.Errorf("host CxConnectFail = %d, want 1", hs[0].CxConnectFail)
	}
}

func TestNoEndpoints(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	c := mustAdd(t, m, cluster("empty", clusterv3.Cluster_STATIC))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	if _, err := c.RoundTrip(req); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("RoundTrip error = %v, want ErrNoHealthyUpstream", err)
	}
	if _, err := c.Dial(ctx); !errors.Is(err, ErrNoHealthyUpstream) {
		t.Errorf("Dial error = %v, want ErrNoHealthyUpstream", err)
	}
	c.CountTimeout()
	wantStats(t, st, "empty", map[string]int64{"upstream_cx_none_healthy": 2, "membership_total": 0, "upstream_rq_timeout": 1})
}

func TestResetBeforeHeaders(t *testing.T) {
	for _, tc := range []struct {
		name      string
		reply     string // written after reading the request; "" closes at once
		wantReset string
		wantCode  int
	}{
		{"closed", "", ResetConnectionTermination, 503},
		{"garbage", "this is not http\r\n\r\n", ResetProtocolError, 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := testCtx(t)
			m, _ := newTestManager(t, nil)
			addr := rawServer(t, func(conn net.Conn) {
				br := bufio.NewReader(conn)
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				io.WriteString(conn, tc.reply)
			})
			c := mustAdd(t, m, staticCluster(t, "reset", addr))
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
			_, err := c.RoundTrip(req)
			var re *ResetError
			if !errors.As(err, &re) {
				t.Fatalf("RoundTrip error = %v (%T), want *ResetError", err, err)
			}
			if re.ResetReason != tc.wantReset || re.StatusCode() != tc.wantCode {
				t.Errorf("ResetError = %q/%d, want %q/%d (%v)", re.ResetReason, re.StatusCode(), tc.wantReset, tc.wantCode, re)
			}
			if !strings.HasSuffix(re.LocalReplyBody(), "reset reason: "+tc.wantReset) {
				t.Errorf("LocalReplyBody = %q", re.LocalReplyBody())
			}
		})
	}
}

// rawServer accepts connections on loopback and runs handle on each, then
// closes it. Everything stops at the end of the test.
func rawServer(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			handle(conn)
			conn.Close()
		}
	}()
	t.Cleanup(func() { l.Close(); <-done })
	return l.Addr().String()
}

func TestMaxRequestsPerConnection(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "maxrq", hostOf(newBackend(t, whoami)))
	pb.MaxRequestsPerConnection = wrapperspb.UInt32(2)
	c := mustAdd(t, m, pb)
	for i := 0; i < 3; i++ {
		get(t, ctx, c)
	}
	// The first connection served two requests, the third needed a new one.
	// (upstream_cx_active is not checked: net/http closes the used-up
	// connection just after handing over the end of its last body.)
	wantStats(t, st, "maxrq", map[string]int64{"upstream_cx_total": 2, "upstream_rq_total": 3})
}

func TestResponseBodyHoldsRequestActive(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	c := mustAdd(t, m, staticCluster(t, "active", hostOf(newBackend(t, whoami))))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	wantStats(t, st, "active", map[string]int64{"upstream_rq_active": 1})
	resp.Body.Close()
	resp.Body.Close()
	wantStats(t, st, "active", map[string]int64{"upstream_rq_active": 0, "upstream_rq_total": 1})
}

func TestAddReplacesChangedClusterOnly(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	pb := staticCluster(t, "swap", hostOf(newBackend(t, whoami)))
	c1 := mustAdd(t, m, pb)
	get(t, ctx, c1)
	if c := mustAdd(t, m, proto.Clone(pb).(*clusterv3.Cluster)); c != c1 {
		t.Fatal("Add of an equal proto returned a new Cluster")
	}
	changed := proto.Clone(pb).(*clusterv3.Cluster)
	changed.ConnectTimeout = dur(7e9)
	c2 := mustAdd(t, m, changed)
	if c2 == c1 || m.Get("swap") != c2 {
		t.Fatal("Add of a changed proto did not register a new Cluster")
	}
	// The retired cluster's idle connection is closed; stats carry over.
	wantStats(t, st, "swap", map[string]int64{"upstream_cx_active": 0, "upstream_rq_total": 1})
	get(t, ctx, c2)
	get(t, ctx, c1) // a retired cluster still serves, then drops its connection
	wantStats(t, st, "swap", map[string]int64{"upstream_cx_active": 1, "upstream_rq_total": 3, "upstream_cx_total": 3})
	if got := m.Clusters(); len(got) != 1 || got[0] != c2 {
		t.Errorf("Clusters() = %v, want [c2]", got)
	}
	m.Remove("swap")
	if m.Get("swap") != nil {
		t.Error("Get after Remove is not nil")
	}
}

func TestAddErrorChangesNothing(t *testing.T) {
	m, _ := newTestManager(t, nil)
	good := mustAdd(t, m, staticCluster(t, "c", "127.0.0.1:1"))
	bad := cluster("c", clusterv3.Cluster_STATIC, lbEndpoint("not-an-ip", 80))
	if _, err := m.Add(bad); err == nil {
		t.Fatal("Add of an invalid cluster succeeded")
	}
	if m.Get("c") != good {
		t.Error("a failed Add replaced the registered cluster")
	}
	m.Close()
	if _, err := m.Add(staticCluster(t, "d", "127.0.0.1:1")); err == nil {
		t.Error("Add after Close succeeded")
	}
}

func TestSwitchingProtocolsBodyIsTheConnection(t *testing.T) {
	ctx := testCtx(t)
	m, st := newTestManager(t, nil)
	addr := rawServer(t, func(conn net.Conn) {
		br := bufio.NewReader(conn)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		io.Copy(conn, br) // echo until the client half-closes
	})
	c := mustAdd(t, m, staticCluster(t, "upgrade", addr))
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://x/", nil)
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", "echo")
	resp, err := c.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("status = %d, want 101", resp.StatusCode)
	}
	rw, ok := resp.Body.(io.ReadWriteCloser)
	if !ok {
		t.Fatalf("101 body %T is not an io.ReadWriteCloser", resp.Body)
	}
	if _, err := io.WriteString(rw, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := rw.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	got, err := io.ReadAll(rw)
	if err != nil || string(got) != "hello" {
		t.Fatalf("echo = %q, %v; want hello", got, err)
	}
	rw.Close()
	wantStats(t, st, "upgrade", map[string]int64{"upstream_rq_active": 0, "upstream_cx_active": 0, "upstream_rq_total": 1})
}
