package dataplane_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"

	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// h3YAML is a hop with an HTTP/3 listener in front of an HTTP/1.1 app.
func h3YAML(certFile, keyFile string, appPort int, allowExtendedConnect bool) string {
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
          http3_protocol_options: {allow_extended_connect: %t}
          upgrade_configs: [{upgrade_type: websocket}]
          route_config:
            virtual_hosts:
            - name: app
              domains: ["*"]
              routes: [{match: {prefix: "/"}, route: {cluster: app}}]
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: app
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}}]}]
`, certFile, keyFile, allowExtendedConnect, appPort)
}

// extendedConnectH3 opens an RFC 9220 WebSocket over HTTP/3.
func extendedConnectH3(t *testing.T, pki *tlstest.PKI, addr, path string) (*http.Response, *http3.RequestStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultTestTimeout)
	t.Cleanup(cancel)
	qc, err := quic.DialAddr(ctx, addr, &tls.Config{RootCAs: pki.Pool, ServerName: "h3.test", NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
	if err != nil {
		t.Fatalf("quic dial: %v", err)
	}
	t.Cleanup(func() { qc.CloseWithError(0, "") })
	tr := &http3.Transport{}
	cc := tr.NewClientConn(qc)
	select {
	case <-cc.ReceivedSettings():
	case <-ctx.Done():
		t.Fatal("no SETTINGS from hop")
	}
	if !cc.Settings().EnableExtendedConnect {
		t.Fatal("hop does not advertise extended CONNECT over HTTP/3")
	}
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := &http.Request{
		Method: http.MethodConnect,
		Proto:  "websocket",
		URL:    &url.URL{Scheme: "https", Host: "h3.test", Path: path},
		Host:   "h3.test",
		Header: http.Header{"Sec-Websocket-Version": {"13"}},
	}
	if err := str.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	res, err := str.ReadResponse()
	if err != nil {
		t.Fatalf("response: %v", err)
	}
	return res, str
}

// TestHTTP3ExtendedConnectReachesHTTP1App: a WebSocket over HTTP/3 (RFC
// 9220) reaches an RFC 6455 app over HTTP/1.1, with the key hop supplies.
func TestHTTP3ExtendedConnectReachesHTTP1App(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "h3.test")
	app := startWSApp(t)
	h := startHop(t, h3YAML(leaf.CertFile, leaf.KeyFile, app.port, true))
	res, str := extendedConnectH3(t, pki, h.addr("h3"), "/chat")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d", res.StatusCode)
	}
	for i := 0; i < 200; i++ {
		msg := []byte(strings.Repeat(fmt.Sprint(i), 1+i%300))
		if err := wsFrameWrite(str, msg); err != nil {
			t.Fatal(err)
		}
		got, err := wsFrameRead(str)
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if string(got) != string(msg) {
			t.Fatalf("message %d corrupted", i)
		}
	}
	seen := app.requests()
	if len(seen) != 1 || seen[0].Method != http.MethodGet || seen[0].Header.Get("Sec-WebSocket-Key") == "" {
		t.Fatalf("app saw %+v", seen)
	}
	for name, want := range map[string]int64{
		"http.h3.downstream_rq_http3_total":     1,
		"http.h3.downstream_cx_http3_total":     1,
		"http.h3.downstream_cx_upgrades_total":  1,
		"http.h3.downstream_cx_upgrades_active": 1,
	} {
		if got := h.stat(name); got != want {
			t.Errorf("%s = %d, want %d", name, got, want)
		}
	}
	str.Close()
	h.waitStat("http.h3.downstream_cx_upgrades_active", 0)
}
