package dataplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/hopproxy/hop/pkg/snapshot"
)

// internalExtension enables internal listeners in a bootstrap.
const internalExtension = `
bootstrap_extensions:
- name: envoy.bootstrap.internal_listener
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.bootstrap.internal_listener.v3.InternalListener
`

// internalHCMYAML: a TCP listener "front" routes every request to cluster
// "decap", whose only endpoint is the internal listener "inner", which
// answers with a direct response.
var internalHCMYAML = internalExtension + `
static_resources:
  listeners:` +
	internalHCM("front", false, `[{match: {prefix: "/missing"}, route: {cluster: nowhere}}, {match: {prefix: "/"}, route: {cluster: decap}}]`) +
	internalHCM("inner", true, innerHelloRoutes) + `
  clusters:
  - name: decap
    load_assignment:
      cluster_name: decap
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {envoy_internal_address: {server_listener_name: inner}}}
  - name: nowhere
    load_assignment:
      cluster_name: nowhere
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {envoy_internal_address: {server_listener_name: nope}}}
`

// innerHelloRoutes answers every request with "Hello, world!\n".
const innerHelloRoutes = `[{match: {prefix: "/"}, direct_response: {status: 200, body: {inline_string: "Hello, world!\n"}}}]`

// internalHCM is one listener of these tests, as a YAML list item under
// "listeners:": name on a loopback port, or an internal listener when
// internal, with a connection manager (stat prefix name) whose one virtual
// host has routes (a YAML flow list).
func internalHCM(name string, internal bool, routes string) string {
	addr := "address: {socket_address: {address: 127.0.0.1, port_value: 0}}"
	if internal {
		addr = "internal_listener: {}"
	}
	return `
  - name: ` + name + `
    ` + addr + `
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ` + name + `
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: ` + routes + `
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`
}

// getPath sends a plain HTTP/1.1 GET to addr and returns status and body.
func getPath(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	c := dialRaw(t, addr)
	c.send("GET " + path + " HTTP/1.1\r\nHost: example.com\r\n\r\n")
	res := c.readResponse("GET")
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	return res.StatusCode, string(body)
}

// TestInternalListenerBehindRoute: a plain GET on a TCP listener reaches
// an internal listener's connection manager through a cluster; the
// internal listener shows in admin's listeners and the cluster's host is
// its internal address.
func TestInternalListenerBehindRoute(t *testing.T) {
	h := startHop(t, internalHCMYAML)
	for i := 0; i < 3; i++ {
		if code, body := getPath(t, h.addr("front"), "/"); code != 200 || body != "Hello, world!\n" {
			t.Fatalf("GET /: %d %q", code, body)
		}
	}
	if got := h.addr("inner"); got != "envoy://inner/" {
		t.Errorf("inner's address = %q, want envoy://inner/", got)
	}
	found := false
	for _, l := range h.dp.ListenerStatus() {
		found = found || (l.Name == "inner" && l.Address == "envoy://inner/")
	}
	if !found {
		t.Errorf("ListenerStatus() = %+v, want inner at envoy://inner/", h.dp.ListenerStatus())
	}
	for _, c := range h.dp.ClusterStatus() {
		if c.Name == "decap" && (len(c.Hosts) != 1 || c.Hosts[0].Address != "envoy://inner/") {
			t.Errorf("decap hosts = %+v, want envoy://inner/", c.Hosts)
		}
	}
	// The front's keep-alive pool reuses one internal connection.
	if got := h.stat("listener.envoy_internal_inner.downstream_cx_total"); got != 1 {
		t.Errorf("listener.envoy_internal_inner.downstream_cx_total = %d, want 1", got)
	}
	if got := h.stat("http.inner.downstream_rq_total"); got != 3 {
		t.Errorf("http.inner.downstream_rq_total = %d, want 3", got)
	}
	if got := h.stat("cluster.decap.upstream_rq_total"); got != 3 {
		t.Errorf("cluster.decap.upstream_rq_total = %d, want 3", got)
	}
}

// TestInternalListenerUnknown503: a cluster whose endpoint names no
// internal listener fails to connect, and the router answers 503 as
// Envoy does.
func TestInternalListenerUnknown503(t *testing.T) {
	h := startHop(t, internalHCMYAML)
	code, body := getPath(t, h.addr("front"), "/missing")
	const want = "upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: immediate connect error: Invalid argument|remote address:envoy://nope/"
	if code != http.StatusServiceUnavailable || body != want {
		t.Fatalf("GET /missing: %d %q, want 503 %q", code, body, want)
	}
	if got := h.stat("cluster.nowhere.upstream_cx_connect_fail"); got != 1 {
		t.Errorf("cluster.nowhere.upstream_cx_connect_fail = %d, want 1", got)
	}
	if code, _ := getPath(t, h.addr("front"), "/"); code != 200 {
		t.Errorf("GET / after the failure: %d", code)
	}
}

// internalTCPYAML: tcp_proxy on "front" to cluster "to_pipe" (the internal
// listener "pipe"), whose tcp_proxy goes to the TCP echo on port %d.
const internalTCPYAML = internalExtension + `
static_resources:
  listeners:
  - name: front
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: front
          cluster: to_pipe
  - name: pipe
    internal_listener: {}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: pipe
          cluster: echo
  clusters:
  - name: to_pipe
    load_assignment:
      cluster_name: to_pipe
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {envoy_internal_address: {server_listener_name: pipe}}}
  - name: echo
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`

// halfCloseEcho runs a TCP echo server that half-closes after the client
// does; done receives the number of bytes echoed per connection.
func halfCloseEcho(t *testing.T) (port int, done chan int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done = make(chan int64, 16)
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(defaultTestTimeout))
				n, _ := io.Copy(c, c)
				c.(*net.TCPConn).CloseWrite()
				done <- n
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-stopped })
	return ln.Addr().(*net.TCPAddr).Port, done
}

// TestInternalListenerTCPProxyEcho: 1 MiB of random bytes each way
// through tcp_proxy → internal listener → tcp_proxy → echo; the client's
// half-close reaches the echo across both proxies and the echo's comes
// back.
func TestInternalListenerTCPProxyEcho(t *testing.T) {
	port, echoed := halfCloseEcho(t)
	h := startHop(t, internalTCPYAML, port)
	c, err := net.DialTimeout("tcp", h.addr("front"), defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	payload := make([]byte, 1<<20)
	rand.Read(payload)
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c) // ends only when the echo's half-close comes back
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-werr; err != nil {
		t.Fatalf("write: %v", err)
	}
	if !bytes.Equal(got, payload) {
		t.Fatalf("got %d bytes back, not the 1 MiB sent", len(got))
	}
	select {
	case n := <-echoed:
		if n != int64(len(payload)) {
			t.Errorf("echo saw %d bytes", n)
		}
	case <-time.After(defaultTestTimeout):
		t.Fatal("the echo never saw the half-close")
	}
	c.Close()
	h.waitStat("listener.envoy_internal_pipe.downstream_cx_active", 0)
	if got := h.stat("listener.envoy_internal_pipe.downstream_cx_total"); got != 1 {
		t.Errorf("listener.envoy_internal_pipe.downstream_cx_total = %d, want 1", got)
	}
}

// internalBundle is front (HCM on 127.0.0.1:port, everything to cluster
// decap) and cluster decap (internal listener "inner"), with the internal
// listener itself when inner is not nil.
func internalBundle(t *testing.T, version string, front *listenerv3.Listener, decap *clusterv3.Cluster, inner *listenerv3.Listener) snapshot.Bundle {
	ls := []*listenerv3.Listener{front}
	if inner != nil {
		ls = append(ls, inner)
	}
	return snapshot.Bundle{Version: version, Listeners: ls, Clusters: []*clusterv3.Cluster{decap}}
}

func innerListener(t *testing.T, body string) *listenerv3.Listener {
	return parse(t, &listenerv3.Listener{}, `{"name": "inner", "internal_listener": {}, "filter_chains": [{"filters": [{"name": "hcm", "typed_config":
 {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "stat_prefix": "inner",
  "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "`+body+`"}}}]}]},
  "http_filters": [{"name": "router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}`)
}

// TestInternalListenerUpdatesAndRemoval: internal listeners follow config
// updates like the others: replaced, removed (503 from then on, the
// kept-alive internal connection drained), and added again.
func TestInternalListenerUpdatesAndRemoval(t *testing.T) {
	h := startDynamic(t, 200*time.Millisecond)
	port := freePort(t)
	front := parse(t, &listenerv3.Listener{}, fmt.Sprintf(`{"name": "front", "address": {"socket_address": {"address": "127.0.0.1", "port_value": %d}},
 "filter_chains": [{"filters": [{"name": "hcm", "typed_config":
 {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "stat_prefix": "front",
  "route_config": {"virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "decap"}}]}]},
  "http_filters": [{"name": "router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}`, port))
	decap := parse(t, &clusterv3.Cluster{}, `{"name": "decap", "load_assignment": {"cluster_name": "decap", "endpoints": [{"lb_endpoints": [
 {"endpoint": {"address": {"envoy_internal_address": {"server_listener_name": "inner"}}}}]}]}}`)
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	h.apply(internalBundle(t, "1", front, decap, innerListener(t, "v1")))
	if code, body := getPath(t, addr, "/"); code != 200 || body != "v1" {
		t.Fatalf("v1: %d %q", code, body)
	}
	h.apply(internalBundle(t, "2", front, decap, innerListener(t, "v2")))
	if code, body := getPath(t, addr, "/"); code != 200 || body != "v2" {
		t.Fatalf("after the update: %d %q", code, body)
	}

	h.apply(internalBundle(t, "3", front, decap, nil))
	code, body := getPath(t, addr, "/")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("after the removal: %d %q, want 503", code, body)
	}
	// The front's pooled connection to the removed listener was drained.
	h.waitStat("listener.envoy_internal_inner.downstream_cx_active", 0)
	if got := h.stat("listener_manager.listener_removed"); got != 1 {
		t.Errorf("listener_removed = %d, want 1", got)
	}

	h.apply(internalBundle(t, "4", front, decap, innerListener(t, "v3")))
	if code, body := getPath(t, addr, "/"); code != 200 || body != "v3" {
		t.Fatalf("added again: %d %q", code, body)
	}
}

// internalDecapYAML: CONNECT terminated on "front" into the internal
// listener "inner", whose connection manager answers the tunnelled HTTP
// (terminate_http_in_http2_connect.yaml's pattern, over HTTP/1.1).
var internalDecapYAML = internalExtension + `
static_resources:
  listeners:` +
	internalHCM("front", false, `[{match: {connect_matcher: {}}, route: {cluster: decap, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}}]`) +
	internalHCM("inner", true, innerHelloRoutes) + `
  clusters:
  - name: decap
    load_assignment:
      cluster_name: decap
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {envoy_internal_address: {server_listener_name: inner}}}
`

// TestConnectTerminatedIntoInternalListener: the bytes of a terminated
// CONNECT are served by the internal listener's connection manager, two
// requests on the tunnel's one connection.
func TestConnectTerminatedIntoInternalListener(t *testing.T) {
	h := startHop(t, internalDecapYAML)
	c := dialRaw(t, h.addr("front"))
	c.send("CONNECT anything.test:443 HTTP/1.1\r\nHost: anything.test:443\r\n\r\n")
	if res := c.readResponse("CONNECT"); res.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT: %d", res.StatusCode)
	}
	for i := 0; i < 2; i++ {
		c.send("GET / HTTP/1.1\r\nHost: inside\r\n\r\n")
		res := c.readResponse("GET")
		body, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(body) != "Hello, world!\n" {
			t.Fatalf("GET through the tunnel: %d %q", res.StatusCode, body)
		}
	}
	if got := h.stat("http.inner.downstream_rq_total"); got != 2 {
		t.Errorf("http.inner.downstream_rq_total = %d, want 2", got)
	}
	c.Conn.(*net.TCPConn).CloseWrite()
	c.expectEOF()
	h.waitStat("listener.envoy_internal_inner.downstream_cx_active", 0)
}

// internalPipeYAML: "front" routes to cluster "to_pipe", the internal
// listener "pipe", whose tcp_proxy carries the connection to the HTTP
// upstream on port %d.
var internalPipeYAML = internalExtension + `
static_resources:
  listeners:` +
	internalHCM("front", false, `[{match: {prefix: "/"}, route: {cluster: to_pipe}}]`) + `
  - name: pipe
    internal_listener: {}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: pipe
          cluster: web
  clusters:
  - name: to_pipe
    load_assignment:
      cluster_name: to_pipe
      endpoints: [{lb_endpoints: [{endpoint: {address: {envoy_internal_address: {server_listener_name: pipe}}}}]}]
  - name: web
    load_assignment:
      cluster_name: web
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

// TestShutdownClosesIdlePoolIntoInternalListener: after a request, the
// front's pool keeps an idle connection into the internal tcp_proxy
// listener, whose tunnel to the upstream stays open. Shutdown closes that
// idle connection once no request is in flight, so it returns at once
// rather than waiting its whole context for a tunnel nobody uses.
func TestShutdownClosesIdlePoolIntoInternalListener(t *testing.T) {
	h := startHop(t, internalPipeYAML, upstreamHTTP(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	if code, body := getPath(t, h.addr("front"), "/"); code != 200 || body != "ok" {
		t.Fatalf("GET /: %d %q", code, body)
	}
	if n := h.stat("tcp.pipe.downstream_cx_total"); n != 1 {
		t.Fatalf("tcp.pipe.downstream_cx_total = %d, want 1", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	h.dp.Shutdown(ctx)
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Shutdown took %v: it waited for the idle pooled connection's tunnel", d)
	}
}
