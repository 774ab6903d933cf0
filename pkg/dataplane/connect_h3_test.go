package dataplane_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// connectH3YAML is an HTTP/3 listener h3 (stat prefix h3) where a CONNECT
// to foo.test:443 is terminated into the TCP echo on port echo and one to
// h1.test:443 is proxied to the HTTP/1.1 CONNECT server on port proxy.
// routerExtra goes into the Router config.
func connectH3YAML(certFile, keyFile string, echo, proxy int, routerExtra string) string {
	return fmt.Sprintf(`
static_resources:
  listeners:
  - name: h3
    address: {socket_address: {protocol: UDP, address: 127.0.0.1, port_value: 0}}
    udp_listener_config: {quic_options: {}}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.quic
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport
          downstream_tls_context:
            common_tls_context:
              tls_certificates: [{certificate_chain: {filename: %q}, private_key: {filename: %q}}]
      filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: h3
          codec_type: HTTP3
          route_config:
            virtual_hosts:
            - name: term
              domains: ["foo.test:443"]
              routes: [{match: {connect_matcher: {}}, route: {cluster: echo, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {}}]}}]
            - name: proxy
              domains: ["h1.test:443"]
              routes: [{match: {connect_matcher: {}}, route: {cluster: proxy, upgrade_configs: [{upgrade_type: CONNECT}]}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router %s}
  clusters:
  - name: echo
    connect_timeout: 1s
    load_assignment:
      cluster_name: echo
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
  - name: proxy
    connect_timeout: 1s
    load_assignment:
      cluster_name: proxy
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`, certFile, keyFile, routerExtra, echo, proxy)
}

// h3ConnectClient is one HTTP/3 connection to hop.
func h3ConnectClient(t *testing.T, pki *tlstest.PKI, addr string) *http3.ClientConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: pki.Pool, ServerName: "h3.test", NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
	if err != nil {
		t.Fatalf("quic dial: %v", err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	return (&http3.Transport{}).NewClientConn(qc)
}

// h3Connect sends a plain CONNECT (:method and :authority only) on a new
// stream of cc.
func h3Connect(t *testing.T, cc *http3.ClientConn, authority string) (*http.Response, *http3.RequestStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Host: authority}, Host: authority, Header: http.Header{}}
	if err := str.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	res, err := str.ReadResponse()
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	return res, str
}

// TestConnectH3: a plain CONNECT over HTTP/3, terminated (Basic over an
// HTTP/3 downstream) and proxied to an HTTP/1.1 upstream, both on one
// connection: 200, 1 MiB each way, the client's FIN reaches the upstream
// and the upstream's comes back as the end of the stream. Again with
// reject_connect_request_early_data, whose watch of the request stream
// must hand every byte on once the client, having waited for the 200,
// sends.
func TestConnectH3(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "h3.test")
	for _, routerExtra := range []string{"", `, reject_connect_request_early_data: true`} {
		t.Run("router{"+routerExtra+"}", func(t *testing.T) {
			h := startHop(t, connectH3YAML(leaf.CertFile, leaf.KeyFile, startTCPEcho(t), startTCPConnectEcho(t), routerExtra))
			cc := h3ConnectClient(t, pki, h.addr("h3"))
			for _, target := range []string{"foo.test:443", "h1.test:443"} {
				t.Run(target, func(t *testing.T) {
					res, str := h3Connect(t, cc, target)
					if res.StatusCode != 200 {
						t.Fatalf("status %d", res.StatusCode)
					}
					echoBoth(t, str, str, 1<<20)
					str.Close()
					if rest, err := io.ReadAll(str); err != nil || len(rest) != 0 {
						t.Fatalf("after FIN: %q, %v", rest, err)
					}
				})
			}
			h.waitStat("http.h3.downstream_cx_upgrades_active", 0)
			if n := h.stat("http.h3.downstream_cx_upgrades_total"); n != 2 {
				t.Errorf("downstream_cx_upgrades_total = %d, want 2", n)
			}
			for _, c := range []string{"echo", "proxy"} {
				if n := h.stat("cluster." + c + ".upstream_cx_total"); n != 1 {
					t.Errorf("cluster.%s.upstream_cx_total = %d, want 1", c, n)
				}
			}
		})
	}
}

// TestConnectH3ConnectError: a CONNECT over HTTP/3 whose upstream refuses
// the connection, terminated (connect_config) or proxied, ends with the
// stream reset with H3_CONNECT_ERROR (the 503 before it may or may not
// arrive: a reset stream's data may be dropped), as Envoy resets it; the
// next CONNECT on the same connection, to a live upstream, still works.
func TestConnectH3ConnectError(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "h3.test")
	for _, tt := range []struct {
		name, dead, live string
		echo, proxy      int
	}{
		{"terminated", "foo.test:443", "h1.test:443", freePort(t), startTCPConnectEcho(t)},
		{"proxied", "h1.test:443", "foo.test:443", startTCPEcho(t), freePort(t)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			h := startHop(t, connectH3YAML(leaf.CertFile, leaf.KeyFile, tt.echo, tt.proxy, ""))
			cc := h3ConnectClient(t, pki, h.addr("h3"))

			ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
			defer cancel()
			str, err := cc.OpenRequestStream(ctx)
			if err != nil {
				t.Fatal(err)
			}
			req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Host: tt.dead}, Host: tt.dead, Header: http.Header{}}
			if err := str.SendRequestHeader(req); err != nil {
				t.Fatal(err)
			}
			res, err := str.ReadResponse()
			if err == nil {
				if res.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("status %d, want 503 or a reset", res.StatusCode)
				}
				_, err = io.ReadAll(str)
			}
			var se *quic.StreamError
			if !errors.As(err, &se) || se.ErrorCode != quic.StreamErrorCode(http3.ErrCodeConnectError) || !se.Remote {
				t.Fatalf("stream ended with %v, want a reset with H3_CONNECT_ERROR", err)
			}
			if n := h.stat("http3.tx_reset"); n != 1 {
				t.Errorf("http3.tx_reset = %d, want 1", n)
			}

			res, live := h3Connect(t, cc, tt.live)
			if res.StatusCode != http.StatusOK {
				t.Fatalf("next tunnel: status %d", res.StatusCode)
			}
			echoBoth(t, live, live, 1<<10)
		})
	}
}
