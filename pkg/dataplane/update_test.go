package dataplane_test

import (
	"net/http"
	"strings"
	"sync"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/hopproxy/hop/pkg/snapshot"
)

// TestRDSUpdateReachesKeepAliveConnection: a new RouteConfiguration for an
// HCM's rds name is used by the next request on a connection opened before
// the update; the connection is neither closed nor replaced, and the
// listener itself did not change (no listener_manager update is counted).
func TestRDSUpdateReachesKeepAliveConnection(t *testing.T) {
	h := startDynamic(t, drain1s)
	lis := []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", "")}
	clusters := []*clusterv3.Cluster{newStatic(t, "a", namedUpstream(t, "A"), ""), newStatic(t, "b", namedUpstream(t, "B"), "")}
	h.apply(snapshot.Bundle{Version: "1", Listeners: lis, Clusters: clusters, Routes: map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "a")}})
	url := "http://" + h.addr("l") + "/"
	cl := newKeepAliveClient(t)
	if code, body := cl.get(url); code != 200 || body != "A" {
		t.Fatalf("before the update: %d %q, want 200 A", code, body)
	}

	h.apply(snapshot.Bundle{Version: "2", Listeners: lis, Clusters: clusters, Routes: map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "b")}})
	for i := range 3 {
		if code, body := cl.get(url); code != 200 || body != "B" {
			t.Fatalf("request %d after the update: %d %q, want 200 B", i, code, body)
		}
	}
	if n := cl.dials.Load(); n != 1 {
		t.Errorf("client dialed %d connections, want 1 (the keep-alive connection was closed)", n)
	}
	if n := h.stat("listener.127.0.0.1_0.downstream_cx_total"); n != 1 {
		t.Errorf("listener.127.0.0.1_0.downstream_cx_total = %d, want 1", n)
	}
	// An RDS push is not a listener update (Envoy counts LDS changes only).
	for _, s := range []string{"listener_manager.listener_modified", "listener_manager.listener_in_place_updated", "listener_manager.listener_removed"} {
		if n := h.stat(s); n != 0 {
			t.Errorf("%s = %d, want 0", s, n)
		}
	}
	if n := h.stat("listener_manager.listener_added"); n != 1 {
		t.Errorf("listener_manager.listener_added = %d, want 1", n)
	}
}

// TestHCMUpdateKeepsOrReplacesConnections: an HCM change that leaves the
// per-connection settings alone (server_name) reaches the open connection
// at its next request; a change of max_request_headers_kb closes the idle
// keep-alive connection at once and an active one after its response, and
// the new limit applies on new connections.
func TestHCMUpdateKeepsOrReplacesConnections(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	port := upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			arrived <- struct{}{}
			<-release
		}
		w.Write([]byte("ok"))
	})
	releaseOnce := sync.OnceFunc(func() { close(release) })
	t.Cleanup(releaseOnce) // before the upstream's Close, which waits for its handlers
	h := startDynamic(t, drain1s)
	clusters := []*clusterv3.Cluster{newStatic(t, "up", port, "")}
	routes := map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/", "up")}
	apply := func(version, hcmExtra string) {
		t.Helper()
		h.apply(snapshot.Bundle{Version: version, Listeners: []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", hcmExtra)}, Clusters: clusters, Routes: routes})
	}
	apply("1", "")
	addr := h.addr("l")
	// Over 2 KiB, and over the up to 8 KiB that net/http lets through past
	// its MaxHeaderBytes on a keep-alive connection; under the default 60.
	big := strings.Repeat("b", 16<<10)

	request := func(c *rawConn, path, hdr string) *http.Response {
		t.Helper()
		c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\nX-Big: " + hdr + "\r\n\r\n")
		res := c.readResponse("GET")
		res.Body.Close()
		return res
	}

	c1 := dialRaw(t, addr)
	if res := request(c1, "/", big); res.StatusCode != 200 || res.Header.Get("Server") != "envoy" {
		t.Fatalf("first request: %d server %q", res.StatusCode, res.Header.Get("Server"))
	}
	apply("2", `, "server_name": "hop-test"`)
	if res := request(c1, "/", big); res.StatusCode != 200 || res.Header.Get("Server") != "hop-test" {
		t.Fatalf("same connection after a server_name change: %d server %q, want 200 hop-test", res.StatusCode, res.Header.Get("Server"))
	}
	if n := h.stat("listener_manager.listener_in_place_updated"); n != 1 {
		t.Errorf("listener_manager.listener_in_place_updated = %d, want 1", n)
	}

	// c1 idle, c2 in the middle of a request when the limit changes.
	c2 := dialRaw(t, addr)
	c2.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
	<-arrived
	apply("3", `, "server_name": "hop-test", "max_request_headers_kb": 2`)
	waitClosed(t, c1.Conn, soon())
	releaseOnce()
	res := c2.readResponse("GET")
	res.Body.Close()
	if res.StatusCode != 200 {
		t.Fatalf("request in flight across the update: %d", res.StatusCode)
	}
	waitClosed(t, c2.Conn, soon())

	c3 := dialRaw(t, addr)
	if res := request(c3, "/", "small"); res.StatusCode != 200 || res.Header.Get("Server") != "hop-test" {
		t.Fatalf("new connection: %d server %q", res.StatusCode, res.Header.Get("Server"))
	}
	if res := request(c3, "/", big); res.StatusCode != 431 {
		t.Fatalf("16 KiB of headers with max_request_headers_kb 2: %d, want 431", res.StatusCode)
	}
	if n := h.stat("listener.127.0.0.1_0.downstream_cx_total"); n != 3 {
		t.Errorf("listener.127.0.0.1_0.downstream_cx_total = %d, want 3", n)
	}
	// Both pushes changed the filter chain alone: in-place updates.
	for _, s := range []string{"listener_manager.listener_modified", "listener_manager.listener_in_place_updated"} {
		if n := h.stat(s); n != 2 {
			t.Errorf("%s = %d, want 2", s, n)
		}
	}
}

// TestClusterRemovalAndEDS: a request routed to a cluster that a push
// removed gets Envoy's cluster-not-found reply (503, empty body, no_cluster
// counted); an EDS cluster serves the endpoints of Bundle.Endpoints, and a
// new assignment moves traffic on the same downstream connection without
// replacing the cluster or touching the listener; an assignment that goes
// away leaves the cluster without hosts.
func TestClusterRemovalAndEDS(t *testing.T) {
	h := startDynamic(t, drain1s)
	lis := []*listenerv3.Listener{newListener(t, "l", "127.0.0.1:0", "")}
	routes := map[string]*routev3.RouteConfiguration{"r": newRoutes(t, "/gone", "gone", "/", "eds")}
	gone := newStatic(t, "gone", namedUpstream(t, "G"), "")
	eds := newEDS(t, "eds")
	claA := map[string]*endpointv3.ClusterLoadAssignment{"eds": newCLA(t, "eds", namedUpstream(t, "A"))}
	h.apply(snapshot.Bundle{Version: "1", Listeners: lis, Clusters: []*clusterv3.Cluster{gone, eds}, Routes: routes, Endpoints: claA})
	base := "http://" + h.addr("l")
	cl := newKeepAliveClient(t)
	if code, body := cl.get(base + "/gone"); code != 200 || body != "G" {
		t.Fatalf("/gone before removal: %d %q", code, body)
	}
	if code, body := cl.get(base + "/"); code != 200 || body != "A" {
		t.Fatalf("EDS cluster: %d %q, want 200 A", code, body)
	}
	edsCluster := h.dp.Clusters.Get("eds")
	compiled := h.dp.Snapshot.Load().Listeners[0]

	h.apply(snapshot.Bundle{Version: "2", Listeners: lis, Clusters: []*clusterv3.Cluster{eds}, Routes: routes, Endpoints: claA})
	if code, body := cl.get(base + "/gone"); code != 503 || body != "" {
		t.Fatalf("/gone after removal: %d %q, want 503 with no body", code, body)
	}
	if n := h.stat("http.t.no_cluster"); n != 1 {
		t.Errorf("http.t.no_cluster = %d, want 1", n)
	}
	if h.dp.Clusters.Get("gone") != nil {
		t.Error("removed cluster still registered")
	}

	claB := map[string]*endpointv3.ClusterLoadAssignment{"eds": newCLA(t, "eds", namedUpstream(t, "B"))}
	h.apply(snapshot.Bundle{Version: "3", Listeners: lis, Clusters: []*clusterv3.Cluster{eds}, Routes: routes, Endpoints: claB})
	if code, body := cl.get(base + "/"); code != 200 || body != "B" {
		t.Fatalf("EDS cluster after new endpoints: %d %q, want 200 B", code, body)
	}
	if h.dp.Clusters.Get("eds") != edsCluster {
		t.Error("an endpoints update replaced the cluster")
	}
	if n := cl.dials.Load(); n != 1 {
		t.Errorf("client dialed %d connections, want 1", n)
	}
	if h.dp.Snapshot.Load().Listeners[0] != compiled {
		t.Error("the listener was compiled again though neither it nor its routes changed")
	}
	for _, s := range []string{"listener_manager.listener_modified", "listener_manager.listener_removed"} {
		if n := h.stat(s); n != 0 {
			t.Errorf("%s = %d, want 0", s, n)
		}
	}

	h.apply(snapshot.Bundle{Version: "4", Listeners: lis, Clusters: []*clusterv3.Cluster{eds}, Routes: routes})
	if code, body := cl.get(base + "/"); code != 503 || body != "no healthy upstream" {
		t.Fatalf("EDS cluster without an assignment: %d %q, want 503 no healthy upstream", code, body)
	}
}
