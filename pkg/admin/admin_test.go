package admin

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hopproxy/hop/internal/leakcheck"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/stats"
)

// adminGoroutines mark goroutines of this package and of net/http.
var adminGoroutines = []string{"hop/pkg/admin.", "net/http."}

func TestMain(m *testing.M) { leakcheck.Main(m, adminGoroutines...) }

// fixture is a server with a little of everything behind it.
type fixture struct {
	srv   *Server
	st    *stats.Store
	ready atomic.Bool
	quits atomic.Int32
}

func newFixture(t *testing.T, mutate func(*Options)) *fixture {
	t.Helper()
	f := &fixture{st: stats.New()}
	f.ready.Store(true)
	root := f.st.Root()
	root.Counter("cluster_manager.cluster_added").Add(2)
	root.Gauge("server.live").Set(1)
	hcm := f.st.Tagged("http", "ingress", "envoy_http_conn_manager_prefix")
	hcm.Counter("downstream_rq_total").Add(7)
	hcm.Gauge("downstream_cx_active").Set(3)
	o := Options{
		Stats:      f.st,
		ConfigDump: func() *adminv3.ConfigDump { return StaticConfigDump(testBootstrap(t), time.Unix(1700000000, 0)) },
		Listeners: func() []ListenerStatus {
			return []ListenerStatus{
				{Name: "listener_0", Address: "0.0.0.0:10000"},
				{Name: "listener_1", Address: "[::1]:10001", AdditionalAddresses: []string{"127.0.0.1:10001"}},
			}
		},
		Clusters: func() []ClusterStatus {
			return []ClusterStatus{
				{Name: "zeta", Hosts: []HostStatus{{Address: "10.0.0.9:80", HealthFlags: "/failed_eds_health"}}},
				{Name: "service_ws", Hosts: []HostStatus{{
					Address: "127.0.0.1:8080", CxActive: 2, CxConnectFail: 1, CxTotal: 5,
					RqActive: 1, RqTotal: 9, Healthy: true,
				}}},
			}
		},
		Ready:   f.ready.Load,
		Quit:    func() { f.quits.Add(1) },
		Version: "hop/test",
		Node:    &corev3.Node{Id: "node-1", Cluster: "c1"},
	}
	if mutate != nil {
		mutate(&o)
	}
	f.srv = New(o)
	return f
}

type reply struct {
	code int
	ct   string
	body string
	hdr  http.Header
}

func (f *fixture) do(method, target string) reply {
	rec := httptest.NewRecorder()
	f.srv.Handler().ServeHTTP(rec, httptest.NewRequest(method, target, nil))
	return reply{rec.Code, rec.Header().Get("Content-Type"), rec.Body.String(), rec.Header()}
}

const (
	ctText = "text/plain; charset=UTF-8"
	ctJSON = "application/json"
	ctHTML = "text/html; charset=UTF-8"
)

func TestEndpoints(t *testing.T) {
	f := newFixture(t, nil)
	tests := []struct {
		name, method, target string
		code                 int
		ct                   string
		check                func(t *testing.T, body string)
	}{
		{"home", "GET", "/", 200, ctHTML, func(t *testing.T, b string) {
			mustContain(t, b, `<a href="/stats">`, `<form action="/quitquitquit" method="post">`)
		}},
		{"help", "GET", "/help", 200, ctText, func(t *testing.T, b string) {
			mustPrefix(t, b, "admin commands are:\n")
			mustContain(t, b, "  /quitquitquit (POST): ", "  /stats: ", "      filter: ")
		}},
		{"unknown path", "GET", "/nope", 404, ctText, func(t *testing.T, b string) {
			mustPrefix(t, b, "invalid path. admin commands are:\n  /: ")
		}},
		{"path match is exact", "GET", "/stats/", 404, ctText, nil},
		{"ready", "GET", "/ready", 200, ctText, func(t *testing.T, b string) { mustEqual(t, b, "LIVE\n") }},
		{"listeners text", "GET", "/listeners", 200, ctText, func(t *testing.T, b string) {
			mustEqual(t, b, "listener_0::0.0.0.0:10000\nlistener_1::[::1]:10001\nlistener_1::127.0.0.1:10001\n")
		}},
		{"listeners json", "GET", "/listeners?format=json", 200, ctJSON, func(t *testing.T, b string) {
			var ls adminv3.Listeners
			mustUnmarshal(t, b, &ls)
			if len(ls.ListenerStatuses) != 2 {
				t.Fatalf("listeners = %v", &ls)
			}
			sa := ls.ListenerStatuses[1].GetLocalAddress().GetSocketAddress()
			if sa.GetAddress() != "::1" || sa.GetPortValue() != 10001 ||
				len(ls.ListenerStatuses[1].AdditionalLocalAddresses) != 1 {
				t.Fatalf("listener_1 = %v", ls.ListenerStatuses[1])
			}
			mustContain(t, b, `"listener_statuses"`, `"local_address"`, `"port_value": 10000`)
		}},
		{"clusters text", "GET", "/clusters", 200, ctText, func(t *testing.T, b string) {
			mustContain(t, b,
				"service_ws::observability_name::service_ws\n",
				"service_ws::default_priority::max_connections::1024\n",
				"service_ws::high_priority::max_retries::3\n",
				"service_ws::added_via_api::false\n",
				"service_ws::127.0.0.1:8080::cx_active::2\n"+
					"service_ws::127.0.0.1:8080::cx_connect_fail::1\n"+
					"service_ws::127.0.0.1:8080::cx_total::5\n"+
					"service_ws::127.0.0.1:8080::rq_active::1\n",
				"service_ws::127.0.0.1:8080::rq_total::9\n",
				"service_ws::127.0.0.1:8080::health_flags::healthy\n",
				"service_ws::127.0.0.1:8080::weight::1\n",
				"zeta::10.0.0.9:80::health_flags::/failed_eds_health\n")
			if strings.Index(b, "service_ws::") > strings.Index(b, "zeta::") {
				t.Errorf("clusters not sorted by name:\n%s", b)
			}
		}},
		{"clusters json", "GET", "/clusters?format=json", 200, ctJSON, func(t *testing.T, b string) {
			var cs adminv3.Clusters
			mustUnmarshal(t, b, &cs)
			if len(cs.ClusterStatuses) != 2 || cs.ClusterStatuses[0].Name != "service_ws" {
				t.Fatalf("clusters = %v", &cs)
			}
			h := cs.ClusterStatuses[0].HostStatuses[0]
			if h.GetAddress().GetSocketAddress().GetPortValue() != 8080 ||
				h.GetHealthStatus().GetEdsHealthStatus() != corev3.HealthStatus_HEALTHY {
				t.Fatalf("host = %v", h)
			}
			got := map[string]uint64{}
			for _, m := range h.Stats {
				got[m.Name] = m.Value
			}
			if got["cx_active"] != 2 || got["rq_total"] != 9 || got["cx_connect_fail"] != 1 {
				t.Fatalf("host stats = %v", got)
			}
			z := cs.ClusterStatuses[1].HostStatuses[0].GetHealthStatus()
			if z.GetEdsHealthStatus() != corev3.HealthStatus_UNHEALTHY {
				t.Fatalf("zeta health = %v", z)
			}
			if n := len(cs.ClusterStatuses[0].GetCircuitBreakers().GetThresholds()); n != 2 {
				t.Fatalf("thresholds = %d", n)
			}
		}},
		{"server_info", "GET", "/server_info", 200, ctJSON, func(t *testing.T, b string) {
			var si adminv3.ServerInfo
			mustUnmarshal(t, b, &si)
			if si.State != adminv3.ServerInfo_LIVE || si.Version != "hop/test" || si.GetNode().GetId() != "node-1" ||
				si.UptimeCurrentEpoch == nil {
				t.Fatalf("server_info = %v", &si)
			}
		}},
		{"quit needs POST", "GET", "/quitquitquit", 405, ctText, func(t *testing.T, b string) {
			mustEqual(t, b, "Method GET not allowed, POST required.")
		}},
		{"pprof index", "GET", "/debug/pprof/", 200, "text/html; charset=utf-8", func(t *testing.T, b string) {
			mustContain(t, b, "goroutine")
		}},
		{"pprof named profile", "GET", "/debug/pprof/goroutine?debug=1", 200, "text/plain; charset=utf-8",
			func(t *testing.T, b string) { mustContain(t, b, "goroutine profile:") }},
		{"pprof cmdline", "GET", "/debug/pprof/cmdline", 200, "text/plain; charset=utf-8", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := f.do(tt.method, tt.target)
			if r.code != tt.code || r.ct != tt.ct {
				t.Fatalf("%s %s = %d %q, want %d %q\n%s", tt.method, tt.target, r.code, r.ct, tt.code, tt.ct, r.body)
			}
			if r.hdr.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("missing X-Content-Type-Options: nosniff")
			}
			if tt.check != nil {
				tt.check(t, r.body)
			}
		})
	}
	if n := f.quits.Load(); n != 0 {
		t.Fatalf("GET /quitquitquit called Quit %d times", n)
	}
}

func TestReadyStates(t *testing.T) {
	f := newFixture(t, nil)
	f.ready.Store(false)
	if r := f.do("GET", "/ready"); r.code != 503 || r.body != "PRE_INITIALIZING\n" {
		t.Fatalf("not ready: %d %q", r.code, r.body)
	}
	g := newFixture(t, func(o *Options) {
		o.State = func() adminv3.ServerInfo_State { return adminv3.ServerInfo_DRAINING }
	})
	if r := g.do("GET", "/ready"); r.code != 503 || r.body != "DRAINING\n" {
		t.Fatalf("draining: %d %q", r.code, r.body)
	}
	// Nothing wired: empty sets, not crashes.
	e := &fixture{srv: New(Options{})}
	for _, p := range []string{"/ready", "/stats", "/stats/prometheus", "/listeners", "/clusters", "/config_dump"} {
		if r := e.do("GET", p); r.code != 200 && !(p == "/ready" && r.code == 503) {
			t.Errorf("empty server %s = %d %q", p, r.code, r.body)
		}
	}
}

func TestQuitQuitQuitCallsQuitOnce(t *testing.T) {
	f := newFixture(t, nil)
	for i := 0; i < 3; i++ {
		if r := f.do("POST", "/quitquitquit"); r.code != 200 || r.body != "OK\n" {
			t.Fatalf("POST /quitquitquit = %d %q", r.code, r.body)
		}
	}
	if n := f.quits.Load(); n != 1 {
		t.Fatalf("Quit called %d times, want 1", n)
	}
}

func TestExtraEndpoints(t *testing.T) {
	hit := 0
	f := newFixture(t, func(o *Options) {
		o.Extra = []Endpoint{
			{Path: "/tunnels", Help: "live tunnels", Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				hit++
				_, _ = io.WriteString(w, "none\n")
			})},
			{Path: "/drain_tunnels", Help: "drain", Mutates: true, Handler: http.NotFoundHandler()},
			{Path: "/stats", Help: "shadow", Handler: http.NotFoundHandler()}, // ignored: built in
		}
	})
	if r := f.do("GET", "/tunnels"); r.code != 200 || r.body != "none\n" || hit != 1 {
		t.Fatalf("/tunnels = %d %q", r.code, r.body)
	}
	if r := f.do("GET", "/drain_tunnels"); r.code != 405 {
		t.Fatalf("GET /drain_tunnels = %d", r.code)
	}
	if r := f.do("GET", "/stats"); r.code != 200 || !strings.Contains(r.body, "server.live: 1") {
		t.Fatalf("/stats shadowed: %d %q", r.code, r.body)
	}
	mustContain(t, f.do("GET", "/help").body, "  /tunnels: live tunnels\n", "  /drain_tunnels (POST): drain\n")
}

// TestServeShutdown runs the server on a real loopback listener.
func TestServeShutdown(t *testing.T) {
	quit := make(chan struct{})
	f := newFixture(t, func(o *Options) {
		o.Quit = func() { close(quit) } // a second call would panic
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(l) }()

	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	base := "http://" + l.Addr().String()
	resp, err := client.Get(base + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "LIVE\n" {
		t.Fatalf("/ready = %d %q", resp.StatusCode, body)
	}
	for i := 0; i < 2; i++ {
		resp, err = client.Post(base+"/quitquitquit", "text/plain", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(body) != "OK\n" {
			t.Fatalf("/quitquitquit = %d %q", resp.StatusCode, body)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	select {
	case <-quit:
	case <-ctx.Done():
		t.Fatal("Quit not called")
	}
	if err := f.srv.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v, want nil after Shutdown", err)
		}
	case <-ctx.Done():
		t.Fatal("Serve did not return after Shutdown")
	}
	client.CloseIdleConnections()
	if err := leakcheck.Wait(leakcheck.Timeout, adminGoroutines...); err != nil {
		t.Fatal(err)
	}
}

// TestShutdownClosesBusyConnections: a request still running when
// Shutdown's context ends is cut, and Serve and the handler both return.
func TestShutdownClosesBusyConnections(t *testing.T) {
	entered := make(chan struct{})
	handlerDone := make(chan struct{})
	f := newFixture(t, func(o *Options) {
		o.Extra = []Endpoint{{Path: "/block", Help: "blocks until the request ends",
			Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				defer close(handlerDone)
				w.WriteHeader(200)
				w.(http.Flusher).Flush()
				close(entered)
				<-r.Context().Done()
			})}}
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- f.srv.Serve(l) }()
	client := &http.Client{Transport: &http.Transport{}}
	defer client.CloseIdleConnections()
	got := make(chan error, 1)
	go func() {
		resp, err := client.Get("http://" + l.Addr().String() + "/block")
		if err == nil {
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		got <- err
	}()
	wait, cancelWait := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancelWait()
	select {
	case <-entered:
	case <-wait.Done():
		t.Fatal("request never reached the handler")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := f.srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown = %v, want the deadline (a request was running)", err)
	}
	select {
	case <-handlerDone:
	case <-wait.Done():
		t.Fatal("handler still running after Shutdown")
	}
	select {
	case err := <-served:
		if err != nil {
			t.Fatalf("Serve = %v", err)
		}
	case <-wait.Done():
		t.Fatal("Serve did not return")
	}
	select {
	case <-got:
	case <-wait.Done():
		t.Fatal("client still waiting after Shutdown")
	}
	client.CloseIdleConnections()
	if err := leakcheck.Wait(leakcheck.Timeout, adminGoroutines...); err != nil {
		t.Fatal(err)
	}
}

func mustUnmarshal(t *testing.T, body string, m proto.Message) {
	t.Helper()
	if err := protojson.Unmarshal([]byte(body), m); err != nil {
		t.Fatalf("unmarshal: %v\n%s", err, body)
	}
}

func mustContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("missing %q in:\n%s", sub, s)
		}
	}
}

func mustPrefix(t *testing.T, s, p string) {
	t.Helper()
	if !strings.HasPrefix(s, p) {
		t.Errorf("want prefix %q in:\n%s", p, s)
	}
}

func mustEqual(t *testing.T, got, want string) {
	t.Helper()
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestPrettyJSONIsEnvoys pins the exact bytes: protojson alone varies its
// whitespace between builds, which golden files could not live with.
func TestPrettyJSONIsEnvoys(t *testing.T) {
	b, err := marshalPretty(listenersProto([]ListenerStatus{{Name: "l0", Address: "0.0.0.0:10000"}}), false)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
 "listener_statuses": [
  {
   "name": "l0",
   "local_address": {
    "socket_address": {
     "address": "0.0.0.0",
     "port_value": 10000
    }
   }
  }
 ]
}
`
	mustEqual(t, string(b), want)
}
