package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/gorilla/websocket"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/hopproxy/hop/xds/client"
	"github.com/hopproxy/hop/xds/xdstest"
)

var allTypes = []string{client.ListenerType, client.RouteType, client.ClusterType, client.EndpointType}

// acked waits until hop has ACKed version of typeURL: in SotW a request
// with that version_info and no error_detail; in delta (no version_info)
// a request answering a nonce with no error_detail.
func acked(t *testing.T, cp *xdstest.Server, typeURL, version string, delta bool) xdstest.Request {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	defer cancel()
	r, err := cp.WaitFor(ctx, func(r xdstest.Request) bool {
		if r.TypeURL != typeURL || r.Error != "" {
			return false
		}
		if delta {
			return r.Delta && r.Nonce != ""
		}
		return r.Version == version
	})
	if err != nil {
		t.Fatalf("no ACK of %s %s: %v", typeURL, version, err)
	}
	return r
}

// simpleConfig is one listener (stat prefix "ingress") routing everything
// through RDS route "r1" to the EDS cluster "svc" at be.
func simpleConfig(t *testing.T, port int, version string, be backend) resources {
	return resources{
		listeners: []*listenerv3.Listener{rdsListener(t, "l1", port, "ingress", "r1", hcmOpts{})},
		routes:    []*routev3.RouteConfiguration{routeTo("r1", "svc", version)},
		clusters:  []*clusterv3.Cluster{edsCluster("svc", time.Second)},
		endpoints: []*endpointv3.ClusterLoadAssignment{endpoints(t, "svc", be.addr)},
	}
}

func TestXDSFirstPushIsACKedAndServed(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			cp := startControlPlane(t)
			be := startBackend(t, "a")
			port, adminPort := freePort(t), freePort(t)
			if err := cp.Set(testNode, "v1", simpleConfig(t, port, "v1", be).byType()); err != nil {
				t.Fatal(err)
			}
			h := startHop(t, adsBootstrap(cp.Addr(), adminPort, delta), adminPort, 1)
			for _, typ := range allTypes {
				acked(t, cp, typ, "v1", delta)
			}
			// The node as Envoy sends it.
			first := cp.Requests()[0]
			if n := first.Node; n.GetId() != testNode || n.GetCluster() != "test-cluster" || n.GetUserAgentName() != "hop" ||
				n.GetLocality().GetZone() != "z1" || n.GetMetadata().GetFields()["team"].GetStringValue() != "platform" ||
				n.GetUserAgentBuildVersion() == nil || len(n.GetClientFeatures()) == 0 {
				t.Errorf("node = %v", n)
			}
			waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port), "a", "v1", defaultTestTimeout)

			for name, want := range map[string]int64{
				"control_plane.connected_state":           1,
				"listener_manager.lds.update_rejected":    0,
				"cluster_manager.cds.update_rejected":     0,
				"listener_manager.total_listeners_active": 1,
				"cluster_manager.active_clusters":         2, // xds_cluster is static
			} {
				if got := h.stat(name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
			for _, name := range []string{"listener_manager.lds.update_success", "cluster_manager.cds.update_success", "http.ingress.rds.r1.update_success"} {
				if got := h.stat(name); got < 1 {
					t.Errorf("%s = %d, want ≥ 1", name, got)
				}
			}
			dump := h.configDump("")
			js := fmt.Sprint(dump)
			for _, want := range []string{"dynamic_listeners", "dynamic_route_configs", "dynamic_active_clusters", "dynamic_endpoint_configs"} {
				if !strings.Contains(js, want) {
					t.Errorf("config_dump has no %s", want)
				}
			}
			ls := h.configDump("dynamic_listeners")
			if !strings.Contains(fmt.Sprint(ls), "active_state") {
				t.Errorf("dynamic_listeners = %v", ls)
			}
		})
	}
}

// withCORS gives l's HCM a CORS filter before the router: hop does not
// implement CORS, so the listener is invalid for hop.
func withCORS(t *testing.T, l *listenerv3.Listener) *listenerv3.Listener {
	var h hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	h.HttpFilters = append([]*hcmv3.HttpFilter{{
		Name: "envoy.filters.http.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(t, &corsv3.Cors{})},
	}}, h.HttpFilters...)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &h)}
	return l
}

// A push with one bad listener and one good new one: the bad one is NACKed
// with its name and field, its previous version keeps serving, the good
// one is applied (Envoy applies the valid part of a response), and
// go-control-plane's immediate re-sends of the rejected snapshot do not
// make hop spin.
func TestXDSNackBadListenerKeepsServing(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			cp := startControlPlane(t)
			be := startBackend(t, "a")
			port, port2, adminPort := freePort(t), freePort(t), freePort(t)
			v1 := simpleConfig(t, port, "v1", be)
			if err := cp.Set(testNode, "v1", v1.byType()); err != nil {
				t.Fatal(err)
			}
			h := startHop(t, adsBootstrap(cp.Addr(), adminPort, delta), adminPort, 1)
			acked(t, cp, client.ListenerType, "v1", delta)
			url := fmt.Sprintf("http://127.0.0.1:%d/", port)
			waitRoute(t, http.DefaultClient, url, "a", "v1", defaultTestTimeout)

			v2 := v1
			v2.listeners = []*listenerv3.Listener{
				withCORS(t, rdsListener(t, "l1", port, "ingress", "r1", hcmOpts{serverName: "changed"})),
				rdsListener(t, "l2", port2, "second", "r1", hcmOpts{}),
			}
			if err := cp.Set(testNode, "v2", v2.byType()); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			nack, err := cp.WaitFor(ctx, func(r xdstest.Request) bool { return r.TypeURL == client.ListenerType && r.Error != "" })
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"listener 'l1'", "http_filters[0]", "envoy.extensions.filters.http.cors.v3.Cors"} {
				if !strings.Contains(nack.Error, want) {
					t.Errorf("error_detail %q does not name %q", nack.Error, want)
				}
			}
			if !delta && nack.Version != "v1" {
				t.Errorf("NACK version_info = %q, want the last accepted v1", nack.Version)
			}
			// The previous l1 serves on; the valid l2 was applied.
			status, b, v, _, err := get(http.DefaultClient, url)
			if err != nil || status != 200 || b != "a" || v != "v1" {
				t.Errorf("l1 after NACK: %d %q %q %v", status, b, v, err)
			}
			waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port2), "a", "v1", defaultTestTimeout)
			if got := h.stat("listener_manager.lds.update_rejected"); got < 1 {
				t.Errorf("lds.update_rejected = %d", got)
			}
			dl := fmt.Sprint(h.configDump("dynamic_listeners"))
			if !strings.Contains(dl, "error_state") || !strings.Contains(dl, "http_filters[0]") {
				t.Errorf("dynamic_listeners has no error_state naming the field: %.2000s", dl)
			}

			// go-control-plane answers every SotW NACK with the same
			// snapshot at once; hop must not loop at full speed.
			if !delta {
				before := countErrors(cp, client.ListenerType)
				time.Sleep(2 * time.Second)
				if n := countErrors(cp, client.ListenerType) - before; n > 6 {
					t.Errorf("%d NACKs in 2s: the NACK loop is not rate-limited", n)
				}
			}
		})
	}
}

func countErrors(cp *xdstest.Server, typeURL string) int {
	n := 0
	for _, r := range cp.Requests() {
		if r.TypeURL == typeURL && r.Error != "" {
			n++
		}
	}
	return n
}

// The control plane goes away: hop keeps serving the last good config,
// reports itself disconnected, reconnects when the server is back and
// takes and ACKs what it missed.
func TestXDSControlPlaneRestart(t *testing.T) {
	cp := startControlPlane(t)
	a, b := startBackend(t, "a"), startBackend(t, "b")
	port, adminPort := freePort(t), freePort(t)
	if err := cp.Set(testNode, "v1", simpleConfig(t, port, "v1", a).byType()); err != nil {
		t.Fatal(err)
	}
	h := startHop(t, adsBootstrap(cp.Addr(), adminPort, false), adminPort, 1)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitRoute(t, http.DefaultClient, url, "a", "v1", defaultTestTimeout)

	cp.Stop()
	h.waitStat("control_plane.connected_state", func(v int64) bool { return v == 0 })
	for i := 0; i < 20; i++ {
		if status, be, v, _, err := get(http.DefaultClient, url); err != nil || status != 200 || be != "a" || v != "v1" {
			t.Fatalf("while the control plane is away: %d %q %q %v", status, be, v, err)
		}
	}
	if err := cp.Set(testNode, "v2", simpleConfig(t, port, "v2", b).byType()); err != nil {
		t.Fatal(err)
	}
	if err := cp.Restart(); err != nil {
		t.Fatal(err)
	}
	for _, typ := range allTypes {
		acked(t, cp, typ, "v2", false)
	}
	waitRoute(t, http.DefaultClient, url, "b", "v2", defaultTestTimeout)
	h.waitStat("control_plane.connected_state", func(v int64) bool { return v == 1 })
	if got := h.stat("listener_manager.lds.update_failure"); got < 1 {
		t.Errorf("lds.update_failure = %d, want ≥ 1 after the stream broke", got)
	}
}

// wsEcho keeps one WebSocket echoing until stop is closed and reports the
// first failure.
func wsEcho(ws *websocket.Conn, id int, stop <-chan struct{}, sent *atomic.Int64) error {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		msg := fmt.Sprintf("ws %d message %d", id, i)
		ws.SetReadDeadline(time.Now().Add(defaultTestTimeout))
		ws.SetWriteDeadline(time.Now().Add(defaultTestTimeout))
		if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			return fmt.Errorf("ws %d write %d: %w", id, i, err)
		}
		_, got, err := ws.ReadMessage()
		if err != nil {
			return fmt.Errorf("ws %d read %d: %w", id, i, err)
		}
		if string(got) != msg {
			return fmt.Errorf("ws %d: got %q, want %q", id, got, msg)
		}
		sent.Add(1)
	}
}

// 50 pushes of routes, clusters, endpoints and the same listener's HCM
// settings while 20 WebSockets echo: none closes, and plain requests follow
// the newest route within a second of each ACK.
func TestXDSPushesDoNotCutWebSockets(t *testing.T) {
	const pushes, sockets = 50, 20
	cp := startControlPlane(t)
	backends := []backend{startBackend(t, "a"), startBackend(t, "b")}
	port, adminPort := freePort(t), freePort(t)
	config := func(i int) resources {
		be := backends[i%2]
		version := fmt.Sprintf("v%d", i)
		rc := routeTo("r1", "web", version)
		// /ws goes to the EDS cluster "ws", everything else to "web".
		wsRoute := routeTo("r1", "ws", version).VirtualHosts[0].Routes[0]
		wsRoute.Match.PathSpecifier = &routev3.RouteMatch_Prefix{Prefix: "/ws"}
		rc.VirtualHosts[0].Routes = append([]*routev3.Route{wsRoute}, rc.VirtualHosts[0].Routes...)
		return resources{
			listeners: []*listenerv3.Listener{rdsListener(t, "l1", port, "ingress", "r1", hcmOpts{via: "hop-" + version})},
			routes:    []*routev3.RouteConfiguration{rc},
			clusters:  []*clusterv3.Cluster{edsCluster("ws", time.Second+time.Duration(i)*time.Millisecond), staticCluster(t, "web", be.addr)},
			endpoints: []*endpointv3.ClusterLoadAssignment{endpoints(t, "ws", be.addr)},
		}
	}
	if err := cp.Set(testNode, "v0", config(0).byType()); err != nil {
		t.Fatal(err)
	}
	h := startHop(t, adsBootstrap(cp.Addr(), adminPort, false), adminPort, 1)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitRoute(t, http.DefaultClient, url, "a", "v0", defaultTestTimeout)
	// The listener serves once its routes are in; the EDS cluster "ws" may
	// still be warming for its endpoints (as in Envoy), so wait for it.
	h.waitStat("cluster.ws.membership_total", func(v int64) bool { return v == 1 })

	stop := make(chan struct{})
	errs := make(chan error, sockets)
	var sent atomic.Int64
	var wg sync.WaitGroup
	for i := 0; i < sockets; i++ {
		ws, res, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/ws", port), nil)
		if err != nil {
			status := 0
			if res != nil {
				status = res.StatusCode
			}
			t.Fatalf("websocket %d: %v (status %d)", i, err, status)
		}
		defer ws.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := wsEcho(ws, i, stop, &sent); err != nil {
				errs <- err
			}
		}()
	}
	var slowest time.Duration
	for i := 1; i <= pushes; i++ {
		version := fmt.Sprintf("v%d", i)
		if err := cp.Set(testNode, version, config(i).byType()); err != nil {
			t.Fatal(err)
		}
		for _, typ := range allTypes {
			acked(t, cp, typ, version, false)
		}
		if d := waitRoute(t, http.DefaultClient, url, backends[i%2].name, version, time.Second); d > slowest {
			slowest = d
		}
		select {
		case err := <-errs:
			t.Fatalf("after push %d: %v", i, err)
		default:
		}
	}
	before := sent.Load()
	h.waitStat("http.ingress.downstream_cx_upgrades_active", func(v int64) bool { return v == sockets })
	for sent.Load() < before+sockets { // every socket still moving
		select {
		case err := <-errs:
			t.Fatal(err)
		case <-time.After(time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d pushes, %d echoes, slowest ACK-to-route %v", pushes, sent.Load(), slowest)
}

// A listener removed by a push stops accepting at once, and its open
// connections (a WebSocket here) go on until --drain-time-s, then close.
func TestXDSRemovedListenerDrains(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "a")
	port, port2, adminPort := freePort(t), freePort(t), freePort(t)
	v1 := simpleConfig(t, port, "v1", be)
	v1.listeners = append(v1.listeners, rdsListener(t, "l2", port2, "second", "r1", hcmOpts{}))
	if err := cp.Set(testNode, "v1", v1.byType()); err != nil {
		t.Fatal(err)
	}
	h := startHop(t, adsBootstrap(cp.Addr(), adminPort, false), adminPort, 1)
	waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port2), "a", "v1", defaultTestTimeout)
	ws, _, err := websocket.DefaultDialer.Dial(fmt.Sprintf("ws://127.0.0.1:%d/", port2), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()

	removed := time.Now()
	if err := cp.Set(testNode, "v2", simpleConfig(t, port, "v1", be).byType()); err != nil {
		t.Fatal(err)
	}
	acked(t, cp, client.ListenerType, "v2", false)
	h.waitStat("listener_manager.total_listeners_draining", func(v int64) bool { return v == 1 })
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port2), time.Second); err == nil {
		c.Close()
		t.Error("the removed listener still accepts connections")
	}
	// Within the drain time the WebSocket still works.
	var n atomic.Int64
	if err := wsEcho1(ws, "during drain"); err != nil {
		t.Fatalf("WebSocket cut before the drain time: %v", err)
	}
	n.Add(1)
	// After it, the WebSocket is closed by hop.
	ws.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	_, _, err = ws.ReadMessage()
	if err == nil {
		t.Fatal("WebSocket still open after the drain time")
	}
	if d := time.Since(removed); d < 900*time.Millisecond {
		t.Errorf("WebSocket closed %v after the removal, before --drain-time-s 1", d)
	}
	h.waitStat("listener_manager.total_listeners_draining", func(v int64) bool { return v == 0 })
	if got := h.stat("listener_manager.listener_removed"); got != 1 {
		t.Errorf("listener_removed = %d", got)
	}
	// l1 was untouched.
	waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port), "a", "v1", time.Second)
}

func wsEcho1(ws *websocket.Conn, msg string) error {
	ws.SetReadDeadline(time.Now().Add(defaultTestTimeout))
	ws.SetWriteDeadline(time.Now().Add(defaultTestTimeout))
	if err := ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		return err
	}
	_, got, err := ws.ReadMessage()
	if err != nil {
		return err
	}
	if string(got) != msg {
		return fmt.Errorf("got %q", got)
	}
	return nil
}

// path_config_source: listeners, clusters, routes and endpoints from files,
// reloaded when a file is replaced; a bad file keeps the last good config.
func TestPathConfigSourceReload(t *testing.T) {
	dir := t.TempDir()
	a, b := startBackend(t, "a"), startBackend(t, "b")
	port, adminPort := freePort(t), freePort(t)
	write := func(name, content string) {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil { // moved into place, as Envoy expects
			t.Fatal(err)
		}
	}
	routes := func(version, cluster string) string {
		return fmt.Sprintf(`version_info: %s
resources:
- "@type": type.googleapis.com/envoy.config.route.v3.RouteConfiguration
  name: r1
  virtual_hosts:
  - name: all
    domains: ["*"]
    routes:
    - match: {prefix: /}
      route: {cluster: %s}
      response_headers_to_add: [{header: {key: x-route-version, value: %s}}]
`, version, cluster, version)
	}
	write("lds.yaml", fmt.Sprintf(`version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.listener.v3.Listener
  name: l1
  address: {socket_address: {address: 127.0.0.1, port_value: %d}}
  filter_chains:
  - filters:
    - name: envoy.filters.network.http_connection_manager
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
        stat_prefix: files
        rds:
          route_config_name: r1
          config_source: {path_config_source: {path: %s}, resource_api_version: V3}
        http_filters:
        - name: envoy.filters.http.router
          typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`, port, filepath.Join(dir, "rds.yaml")))
	write("cds.yaml", fmt.Sprintf(`version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: a
  type: STATIC
  load_assignment: {cluster_name: a, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}}]}]}
- "@type": type.googleapis.com/envoy.config.cluster.v3.Cluster
  name: b
  type: EDS
  eds_cluster_config: {eds_config: {path_config_source: {path: %s}, resource_api_version: V3}}
`, portOf(a.addr), filepath.Join(dir, "eds.yaml")))
	write("eds.yaml", fmt.Sprintf(`version_info: "1"
resources:
- "@type": type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment
  cluster_name: b
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}}]}]
`, portOf(b.addr)))
	write("rds.yaml", routes("r-1", "a"))
	bootstrap := fmt.Sprintf(`
node: {id: files, cluster: test}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
dynamic_resources:
  lds_config: {path_config_source: {path: %s}, resource_api_version: V3}
  cds_config: {path_config_source: {path: %s}, resource_api_version: V3}
`, adminPort, filepath.Join(dir, "lds.yaml"), filepath.Join(dir, "cds.yaml"))
	h := startHop(t, bootstrap, adminPort, 1)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitRoute(t, http.DefaultClient, url, "a", "r-1", defaultTestTimeout)

	write("rds.yaml", routes("r-2", "b")) // to the EDS cluster from eds.yaml
	waitRoute(t, http.DefaultClient, url, "b", "r-2", defaultTestTimeout)

	write("rds.yaml", "version_info: broken\nresources: [{\"@type\": nonsense}]\n")
	h.waitStat("http.files.rds.r1.update_failure", func(v int64) bool { return v >= 1 })
	if status, be, v, _, err := get(http.DefaultClient, url); err != nil || status != 200 || be != "b" || v != "r-2" {
		t.Errorf("after a bad file: %d %q %q %v", status, be, v, err)
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// Warming: a new listener serves only once its route configuration has
// arrived, an EDS cluster only once its endpoints have; each stops waiting
// when its initial_fetch_timeout passes (then the routes are empty: 404).
func TestXDSWarming(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "a")
	port, port2, port3, adminPort := freePort(t), freePort(t), freePort(t), freePort(t)
	v1 := simpleConfig(t, port, "v1", be)
	if err := cp.Set(testNode, "v1", v1.byType()); err != nil {
		t.Fatal(err)
	}
	h := startHop(t, adsBootstrap(cp.Addr(), adminPort, false), adminPort, 1)
	waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port), "a", "v1", defaultTestTimeout)

	// v2 adds l2, whose route r2 the control plane does not have yet, and
	// l3, whose route r3 never comes but which waits only 300ms for it.
	v2 := v1
	l3 := rdsListener(t, "l3", port3, "third", "r3", hcmOpts{})
	setRDSFetchTimeout(t, l3, 300*time.Millisecond)
	v2.listeners = append(slicesClone(v1.listeners), rdsListener(t, "l2", port2, "second", "r2", hcmOpts{}), l3)
	if err := cp.Set(testNode, "v2", v2.byType()); err != nil {
		t.Fatal(err)
	}
	acked(t, cp, client.ListenerType, "v2", false) // accepted into warming is ACKed, as Envoy does
	h.waitStat("listener_manager.total_listeners_warming", func(v int64) bool { return v >= 1 })
	if c, err := net.DialTimeout("tcp", fmt.Sprintf("127.0.0.1:%d", port2), time.Second); err == nil {
		c.Close()
		t.Error("l2 accepts connections before its routes arrived")
	}
	if !strings.Contains(fmt.Sprint(h.configDump("dynamic_listeners")), "warming_state") {
		t.Error("config_dump shows no warming listener")
	}
	// l3 gives up waiting: it serves an empty route table.
	waitStatus(t, fmt.Sprintf("http://127.0.0.1:%d/", port3), http.StatusNotFound)
	if got := h.stat("http.third.rds.r3.init_fetch_timeout"); got != 1 {
		t.Errorf("http.third.rds.r3.init_fetch_timeout = %d", got)
	}

	// v3 brings r2: l2 goes live.
	v3 := v2
	v3.routes = append(slicesClone(v2.routes), routeTo("r2", "svc", "v3"))
	if err := cp.Set(testNode, "v3", v3.byType()); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port2), "a", "v3", defaultTestTimeout)

	// An EDS cluster warms until its endpoints arrive: v4 adds cluster
	// "late" without endpoints, and it waits in warming; v5 brings the
	// endpoints and moves r1 to it.
	v4 := v3
	v4.clusters = append(slicesClone(v3.clusters), edsCluster("late", time.Second))
	if err := cp.Set(testNode, "v4", v4.byType()); err != nil {
		t.Fatal(err)
	}
	acked(t, cp, client.ClusterType, "v4", false)
	h.waitStat("cluster_manager.warming_clusters", func(v int64) bool { return v == 1 })
	if !strings.Contains(fmt.Sprint(h.configDump("dynamic_warming_clusters")), "late") {
		t.Error("config_dump does not show cluster late warming")
	}
	v5 := v4
	v5.endpoints = append(slicesClone(v4.endpoints), endpoints(t, "late", be.addr))
	v5.routes = []*routev3.RouteConfiguration{routeTo("r1", "late", "v5"), routeTo("r2", "svc", "v3")}
	if err := cp.Set(testNode, "v5", v5.byType()); err != nil {
		t.Fatal(err)
	}
	waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port), "a", "v5", defaultTestTimeout)
	h.waitStat("cluster_manager.warming_clusters", func(v int64) bool { return v == 0 })
}

func slicesClone[T any](s []T) []T { return append([]T(nil), s...) }

// setRDSFetchTimeout sets initial_fetch_timeout on l's RDS config source.
func setRDSFetchTimeout(t *testing.T, l *listenerv3.Listener, d time.Duration) {
	var h hcmv3.HttpConnectionManager
	if err := l.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&h); err != nil {
		t.Fatal(err)
	}
	h.GetRds().ConfigSource.InitialFetchTimeout = durationpb.New(d)
	l.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(t, &h)}
}

func waitStatus(t *testing.T, url string, want int) {
	t.Helper()
	deadline := time.Now().Add(defaultTestTimeout)
	for {
		status, _, _, _, err := get(http.DefaultClient, url)
		if err == nil && status == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: %d %v, want %d", url, status, err, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// lds_config on its own api_config_source (a per-type ListenerDiscoveryService
// stream, delta here) next to ADS for the rest.
func TestXDSSeparateLDSStream(t *testing.T) {
	cp := startControlPlane(t)
	be := startBackend(t, "a")
	port, adminPort := freePort(t), freePort(t)
	if err := cp.Set(testNode, "v1", simpleConfig(t, port, "v1", be).byType()); err != nil {
		t.Fatal(err)
	}
	bs := strings.Replace(adsBootstrap(cp.Addr(), adminPort, false),
		"  lds_config: {ads: {}, resource_api_version: V3}",
		"  lds_config: {resource_api_version: V3, api_config_source: {api_type: DELTA_GRPC, transport_api_version: V3, grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]}}", 1)
	startHop(t, bs, adminPort, 1)
	r := acked(t, cp, client.ListenerType, "v1", true)
	if !strings.Contains(r.Method, "ListenerDiscoveryService/DeltaListeners") {
		t.Errorf("listeners came over %q, want the per-type delta LDS stream", r.Method)
	}
	acked(t, cp, client.ClusterType, "v1", false)
	waitRoute(t, http.DefaultClient, fmt.Sprintf("http://127.0.0.1:%d/", port), "a", "v1", defaultTestTimeout)
}
