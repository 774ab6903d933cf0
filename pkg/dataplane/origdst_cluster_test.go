package dataplane_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
)

// origDstYAML: on listener "l", CONNECT with "foo: bar" is terminated to
// the ORIGINAL_DST cluster keyed by :authority (as
// terminate_http1_connect.yaml), and ordinary requests go to the
// ORIGINAL_DST cluster keyed by x-envoy-original-dst-host.
const origDstYAML = `
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: t
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match:
                  connect_matcher: {}
                  headers: [{name: foo, string_match: {exact: bar}}]
                route:
                  cluster: by_authority
                  upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]
              - match: {prefix: "/"}
                route: {cluster: by_header}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: by_authority
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    original_dst_lb_config:
      use_http_header: true
      http_header_name: ":authority"
  - name: by_header
    connect_timeout: 1s
    type: ORIGINAL_DST
    lb_policy: CLUSTER_PROVIDED
    original_dst_lb_config: {use_http_header: true}
`

// origDstEcho is a TCP echo that half-closes after the client does.
func origDstEcho(t *testing.T) string {
	t.Helper()
	port, _ := halfCloseEcho(t)
	return fmt.Sprintf("127.0.0.1:%d", port)
}

// TestOriginalDstConnectByAuthority: a terminated CONNECT goes to the
// address its authority names; a name instead of an address has no host
// (503, as Envoy never resolves it here).
func TestOriginalDstConnectByAuthority(t *testing.T) {
	h := startHop(t, origDstYAML)
	echo := origDstEcho(t)

	c := dialRaw(t, h.addr("l"))
	c.send("CONNECT " + echo + " HTTP/1.1\r\nHost: " + echo + "\r\nfoo: bar\r\n\r\n")
	if res := c.readResponse("CONNECT"); res.StatusCode != http.StatusOK {
		t.Fatalf("CONNECT %s: %d", echo, res.StatusCode)
	}
	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	go c.Conn.Write(payload)
	got := make([]byte, len(payload))
	if _, err := io.ReadFull(c.br, got); err != nil || string(got) != string(payload) {
		t.Fatalf("echo through the tunnel: %v", err)
	}
	c.Conn.(*net.TCPConn).CloseWrite()
	c.expectEOF()

	found := false
	for _, cs := range h.dp.ClusterStatus() {
		for _, hs := range cs.Hosts {
			found = found || (cs.Name == "by_authority" && hs.Address == echo && hs.Hostname == "by_authority"+echo)
		}
	}
	if !found {
		t.Errorf("ClusterStatus() = %+v, want by_authority's host %s", h.dp.ClusterStatus(), echo)
	}

	c = dialRaw(t, h.addr("l"))
	c.send("CONNECT localhost:80 HTTP/1.1\r\nHost: localhost:80\r\nfoo: bar\r\n\r\n")
	res := c.readResponse("CONNECT")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable || string(body) != "no healthy upstream" {
		t.Fatalf("CONNECT to a name: %d %q, want 503 no healthy upstream", res.StatusCode, body)
	}
	if got := h.stat("cluster.by_authority.original_dst_host_invalid"); got != 1 {
		t.Errorf("original_dst_host_invalid = %d, want 1", got)
	}
}

// TestOriginalDstRequestByHeader: an ordinary request goes to the address
// in x-envoy-original-dst-host; without it there is no host (503).
func TestOriginalDstRequestByHeader(t *testing.T) {
	h := startHop(t, origDstYAML)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "backend "+r.Host)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	backend := ln.Addr().String()

	c := dialRaw(t, h.addr("l"))
	c.send("GET / HTTP/1.1\r\nHost: app.test\r\nx-envoy-original-dst-host: " + backend + "\r\n\r\n")
	res := c.readResponse("GET")
	body, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 || string(body) != "backend app.test" {
		t.Fatalf("GET with the header: %d %q", res.StatusCode, body)
	}

	c.send("GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
	res = c.readResponse("GET")
	body, _ = io.ReadAll(res.Body)
	if res.StatusCode != http.StatusServiceUnavailable || string(body) != "no healthy upstream" {
		t.Fatalf("GET without the header: %d %q, want 503 no healthy upstream", res.StatusCode, body)
	}
	if got := h.stat("cluster.by_header.upstream_cx_none_healthy"); got != 1 {
		t.Errorf("upstream_cx_none_healthy = %d, want 1", got)
	}
}
