package listener

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/snapshot"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// TestQUICAndTCPSamePort: a UDP listener may share its address with a TCP
// one (Envoy's usual HTTP/3 setup: TCP and UDP on 443).
func TestQUICAndTCPSamePort(t *testing.T) {
	f := newQUICFixture(t, time.Second)
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	q := f.listener(t, port, "", f.chainYAML("c", "", "hello", ""))
	tcpYAML := fmt.Sprintf(`
name: t
address: {socket_address: {address: 127.0.0.1, port_value: %d}}
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: h1
      route_config: {}
      http_filters: [{name: envoy.filters.http.router, typed_config: {"@type": %q}}]
`, port, routerURL)
	tl, err := compileListenerYAML(tcpYAML, f.reg, f.st)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Compile(snapshot.Bundle{Listeners: []*listenerv3.Listener{q.Proto, tl.Proto}}, f.reg, f.st, nil, nil)
	if err != nil {
		t.Fatalf("TCP and UDP on one port refused: %v", err)
	}
	f.reconcile(t, snap.Listeners...)
	if f.m.Addr("q").Network() != "udp" || f.m.Addr("t").Network() != "tcp" {
		t.Errorf("addresses %v, %v", f.m.Addr("q"), f.m.Addr("t"))
	}
}

// TestCompileQUICListener: what a QUIC listener accepts and refuses, with
// Envoy's messages where it has them.
func TestCompileQUICListener(t *testing.T) {
	f := &quicFixture{reg: filter.NewRegistry(), st: stats.New(), pki: tlstest.New(t)}
	f.reg.Register(router.Builder{})
	f.leaf = f.pki.Leaf(t, "127.0.0.1")
	quicChain := f.chainYAML("c", "", "x", "")
	h1Chain := strings.Replace(quicChain, "codec_type: HTTP3", "codec_type: AUTO", 1)
	for _, tc := range []struct {
		name, addr, udp, chain, wantErr string
	}{
		{"quic", "protocol: UDP, ", "udp_listener_config: {quic_options: {}}", quicChain, ""},
		{"quic options", "protocol: UDP, ", "udp_listener_config: {quic_options: {idle_timeout: 30s, crypto_handshake_timeout: 10s, quic_protocol_options: {max_concurrent_streams: 10, initial_stream_window_size: 65536, initial_connection_window_size: 65536, connection_keepalive: {max_interval: 10s, initial_interval: 1s}}}}", quicChain, ""},
		{"udp without quic", "protocol: UDP, ", "", quicChain, "udp_listener_config.quic_options: a UDP listener without quic_options (raw UDP, udp_proxy) is not supported"},
		{"unsupported quic option", "protocol: UDP, ", "udp_listener_config: {quic_options: {reject_new_connections: true}}", quicChain, "udp_listener_config.quic_options.reject_new_connections: unsupported field"},
		{"unsupported protocol option", "protocol: UDP, ", "udp_listener_config: {quic_options: {quic_protocol_options: {connection_options: AKDU}}}", quicChain, "udp_listener_config.quic_options.quic_protocol_options.connection_options: unsupported field"},
		{"HTTP/1 codec on QUIC", "protocol: UDP, ", "udp_listener_config: {quic_options: {}}", h1Chain, "Non-HTTP/3 codec configured on QUIC listener."},
		{"HTTP/3 codec on TCP", "", "", quicChain, "a QUIC transport socket needs a UDP listener"},
		{"no transport socket on QUIC", "protocol: UDP, ", "udp_listener_config: {quic_options: {}}", strings.Replace(quicChain, "transport_socket:", "x_transport_socket:", 1), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chain := tc.chain
			if strings.Contains(chain, "x_transport_socket") {
				// Drop the transport socket block altogether.
				lines := strings.Split(quicChain, "\n")
				var keep []string
				skip := false
				for _, ln := range lines {
					if strings.HasPrefix(ln, "  transport_socket:") {
						skip = true
						continue
					}
					if skip && strings.HasPrefix(ln, "  filters:") {
						skip = false
					}
					if !skip {
						keep = append(keep, ln)
					}
				}
				chain = strings.Join(keep, "\n")
				tc.wantErr = "filter_chains[0].transport_socket: a QUIC listener needs an envoy.transport_sockets.quic transport socket"
			}
			y := fmt.Sprintf("name: q\naddress: {socket_address: {%saddress: 127.0.0.1, port_value: 1}}\n%s\nfilter_chains:%s", tc.addr, tc.udp, chain)
			_, err := compileListenerYAML(y, f.reg, f.st)
			switch {
			case tc.wantErr == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Fatalf("error %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
