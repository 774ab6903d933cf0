package dataplane_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"
)

// tunnelingYAML: raw TCP into a tcp_proxy listener, tunnelled by hop to
// hop's own CONNECT-terminating listener "term" (on termPort), which
// opens a TCP connection to the echo server. One front listener per
// tunnel kind: HTTP/1.1 CONNECT, HTTP/2 CONNECT and HTTP/2 POST. Every
// listener gets a port of its own (hop refuses two on 127.0.0.1:0).
const tunnelingYAML = `
static_resources:
  listeners:
  - name: front_h1
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: h1
          cluster: term_h1
          tunneling_config:
            hostname: "echo.test:%%DOWNSTREAM_LOCAL_PORT%%"
  - name: front_h2
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: h2
          cluster: term_h2
          idle_timeout: 30s
          tunneling_config:
            hostname: echo.test:443
            headers_to_add:
            - header: {key: x-client, value: "%%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%%"}
  - name: front_post
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: post
          cluster: term_h2
          tunneling_config:
            hostname: echo.test:443
            use_post: true
            post_path: /tunnel
  - name: term
    address: {socket_address: {address: 127.0.0.1, port_value: %d}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: term
          codec_type: AUTO
          route_config:
            name: rc
            virtual_hosts:
            - name: echo
              domains: ["echo.test:*"]
              routes:
              - match: {connect_matcher: {}}
                route:
                  cluster: echo
                  upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]
              - match:
                  prefix: /tunnel
                  headers: [{name: ":method", string_match: {exact: POST}}]
                route:
                  cluster: echo
                  upgrade_configs: [{upgrade_type: CONNECT, connect_config: {allow_post: true}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: term_h1
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: term_h1
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: term_h2
    type: STATIC
    connect_timeout: 2s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: term_h2
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: echo
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: echo
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`

func startTunneling(t *testing.T) *hop {
	t.Helper()
	term := freePort(t)
	return startHop(t, tunnelingYAML, freePort(t), freePort(t), freePort(t), term, term, term, startTCPEcho(t))
}

// echoThrough sends payload into addr, half-closes, and checks that the
// same bytes come back before EOF.
func echoThrough(t *testing.T, addr string, payload []byte) error {
	c, err := net.DialTimeout("tcp", addr, defaultTestTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	werr := make(chan error, 1)
	go func() {
		_, err := c.Write(payload)
		if err == nil {
			err = c.(*net.TCPConn).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(c)
	if err != nil {
		return fmt.Errorf("read: %w (after %d bytes)", err, len(got))
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("write: %w", err)
	}
	if !bytes.Equal(got, payload) {
		return fmt.Errorf("echoed %d bytes, not the %d sent", len(got), len(payload))
	}
	return nil
}

// TestTunnelingThroughHop: 1 MiB of random bytes each way through every
// tunnel kind, from the tcp_proxy listener through hop's own termination
// to the echo server and back.
func TestTunnelingThroughHop(t *testing.T) {
	h := startTunneling(t)
	for _, tc := range []struct{ listener, prefix string }{
		{"front_h1", "h1"}, {"front_h2", "h2"}, {"front_post", "post"},
	} {
		t.Run(tc.listener, func(t *testing.T) {
			payload := make([]byte, 1<<20)
			rand.Read(payload)
			if err := echoThrough(t, h.addr(tc.listener), payload); err != nil {
				t.Fatal(err)
			}
			h.waitStat("tcp."+tc.prefix+".downstream_cx_rx_bytes_total", 1<<20)
			h.waitStat("tcp."+tc.prefix+".downstream_cx_tx_bytes_total", 1<<20)
			for name, want := range map[string]int64{
				"tcp." + tc.prefix + ".downstream_cx_total":  1,
				"tcp." + tc.prefix + ".idle_timeout":         0,
				"tcp." + tc.prefix + ".upstream_flush_total": 0,
			} {
				if got := h.stat(name); got != want {
					t.Errorf("%s = %d, want %d", name, got, want)
				}
			}
		})
	}
	h.waitStat("cluster.term_h1.upstream_rq_total", 1)
	h.waitStat("cluster.term_h2.upstream_rq_total", 2)
	h.waitStat("cluster.echo.upstream_cx_total", 3)
}

// TestTunnelingManyOverOneH2Connection: 100 concurrent tunnels ride one
// HTTP/2 connection to the terminating listener.
func TestTunnelingManyOverOneH2Connection(t *testing.T) {
	h := startTunneling(t)
	const n = 100
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			payload := make([]byte, 32<<10)
			rand.Read(payload)
			copy(payload, fmt.Sprintf("tunnel %d", i))
			if err := echoThrough(t, h.addr("front_h2"), payload); err != nil {
				errs <- fmt.Errorf("tunnel %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	h.waitStat("tcp.h2.downstream_cx_total", n)
	if got := h.stat("cluster.term_h2.upstream_cx_total"); got != 1 {
		t.Errorf("cluster.term_h2.upstream_cx_total = %d, want 1 (one shared HTTP/2 connection)", got)
	}
	h.waitStat("cluster.term_h2.upstream_rq_total", n)
	h.waitStat("cluster.echo.upstream_cx_total", n)
}

// TestTunnelingHostnameFromSNI: a tls_inspector reads the ClientHello of
// a TLS connection that hop passes through, and the tunnel's hostname
// %REQUESTED_SERVER_NAME%:443 becomes the CONNECT target; the hello itself
// travels through the tunnel once it is established. (The chain matches
// transport_protocol tls: hop runs the inspector only for chains that
// match on what it finds.)
func TestTunnelingHostnameFromSNI(t *testing.T) {
	up := startRawUpstream(t)
	h := startHop(t, tunnelToYAML("sni", up.port(), `
    listener_filters:
    - name: tls
      typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}`,
		`filter_chain_match: {transport_protocol: tls}`, `
            hostname: "%REQUESTED_SERVER_NAME%:443"
            headers_to_add:
            - header: {key: x-local-port, value: "%DOWNSTREAM_LOCAL_PORT%"}`))
	c, err := net.DialTimeout("tcp", h.addr("sni"), defaultTestTimeout)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(defaultTestTimeout))
	go tls.Client(c, &tls.Config{ServerName: "www.example.com", InsecureSkipVerify: true}).Handshake()
	u := up.accept(t)
	req := u.readRequest()
	_, port, _ := net.SplitHostPort(h.addr("sni"))
	if req.Method != "CONNECT" || req.Host != "www.example.com:443" || req.RequestURI != "www.example.com:443" || req.Header.Get("X-Local-Port") != port {
		t.Fatalf("upstream got %s %s (Host %s) %v", req.Method, req.RequestURI, req.Host, req.Header)
	}
	u.send("HTTP/1.1 200 OK\r\n\r\n")
	// The ClientHello was held until the 200: it is the first thing in
	// the tunnel (a TLS handshake record).
	if b := u.readN(1); b[0] != 0x16 {
		t.Fatalf("first tunnelled byte %#x, want a TLS handshake record", b[0])
	}
}

// TestTunnelingRequestID: tunneling_config's request_id_extension (uuid),
// accepted by the config checks, puts a fresh UUID into each tunnel request
// under request_id_header; the tracing options of the uuid extension are
// accepted with no effect.
func TestTunnelingRequestID(t *testing.T) {
	up := startRawUpstream(t)
	h := startHop(t, tunnelToYAML("rid", up.port(), "", "", `
            hostname: rid.test:443
            request_id_header: x-tunnel-id
            request_id_metadata_key: tunnel_id
            request_id_extension:
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig
                pack_trace_reason: false`))
	uuid := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	seen := map[string]bool{}
	for range 2 {
		c, err := net.DialTimeout("tcp", h.addr("rid"), defaultTestTimeout)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		u := up.accept(t)
		req := u.readRequest()
		id := req.Header.Get("X-Tunnel-Id")
		if req.Method != "CONNECT" || req.Host != "rid.test:443" || !uuid.MatchString(id) || req.Header.Get("X-Request-Id") != "" {
			t.Fatalf("upstream got %s %s, headers %v; want a v4 UUID in x-tunnel-id only", req.Method, req.Host, req.Header)
		}
		if seen[id] {
			t.Fatalf("request id %s used twice", id)
		}
		seen[id] = true
	}
}

// tunnelToYAML is one listener, name (also the stat prefix), whose
// tcp_proxy tunnels to the HTTP/1.1 cluster "proxy" at 127.0.0.1:upPort.
// listenerExtra is YAML appended to the listener (indented 4), chainMatch a
// filter chain field line (or ""), tunneling the tunneling_config fields
// (indented 12). The result is used verbatim: no % escaping.
func tunnelToYAML(name string, upPort int, listenerExtra, chainMatch, tunneling string) string {
	if chainMatch != "" {
		chainMatch = "- " + chainMatch + "\n      "
	} else {
		chainMatch = "- "
	}
	return `
static_resources:
  listeners:
  - name: ` + name + `
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}` + listenerExtra + `
    filter_chains:
    ` + chainMatch + `filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: ` + name + `
          cluster: proxy
          tunneling_config:` + tunneling + `
  clusters:
  - name: proxy
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: proxy
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ` + strconv.Itoa(upPort) + `}}}}]}]
`
}
