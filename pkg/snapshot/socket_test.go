package snapshot

import (
	"fmt"
	"strings"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/quic/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/hopproxy/hop/pkg/filter"
	filterrouter "github.com/hopproxy/hop/pkg/filter/router"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tlsconfig/tlstest"
)

// TestTransportSockets: a filter chain's transport socket compiles into
// its TLS config; errors carry the socket's field path; TCP listeners
// refuse QUIC sockets and the HTTP/3 codec.
func TestTransportSockets(t *testing.T) {
	pki := tlstest.New(t)
	leaf := pki.Leaf(t, "127.0.0.1")
	hcmFilter := func(codec string) string {
		return fmt.Sprintf(`filters: [{name: hcm, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager,
  stat_prefix: t, codec_type: %s, route_config: {},
  http_filters: [{name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]}}]`, codec)
	}
	tlsCtx := fmt.Sprintf(`{common_tls_context: {alpn_protocols: [h2], tls_certificates: [{certificate_chain: {filename: %q}, private_key: {filename: %q}}]}}`, leaf.CertFile, leaf.KeyFile)
	tlsSocket := `transport_socket: {name: tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, ` + tlsCtx[1:] + `}`
	for _, tc := range []struct {
		name, chain, wantErr string
		check                func(*Listener) bool
	}{
		{"cleartext", hcmFilter("AUTO"), "", func(l *Listener) bool { return l.Chains[0].TLS == nil && !l.HasTLS }},
		{"raw_buffer", `transport_socket: {name: raw, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}, ` + hcmFilter("AUTO"), "",
			func(l *Listener) bool { return l.Chains[0].TLS == nil && !l.HasTLS }},
		{"tls", tlsSocket + ", transport_socket_connect_timeout: 3s, " + hcmFilter("HTTP2"), "", func(l *Listener) bool {
			fc := l.Chains[0]
			return fc.TLS != nil && !fc.QUIC && l.HasTLS && fc.HandshakeTimeout == 3*time.Second && len(fc.TLS.Certificates) == 1 && fc.TLS.NextProtos[0] == "h2"
		}},
		{"missing certificate", `transport_socket: {name: tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, common_tls_context: {tls_certificates: [{certificate_chain: {filename: /nonexistent/c.pem}, private_key: {filename: /nonexistent/k.pem}}]}}}, ` + hcmFilter("AUTO"),
			"filter_chains[0].transport_socket.typed_config.common_tls_context.tls_certificates[0]", nil},
		{"unknown socket", `transport_socket: {name: x, typed_config: {"@type": type.googleapis.com/envoy.config.listener.v3.Listener}}, ` + hcmFilter("AUTO"),
			`filter_chains[0].transport_socket.typed_config: unsupported transport socket "type.googleapis.com/envoy.config.listener.v3.Listener"`, nil},
		{"QUIC socket on TCP", `transport_socket: {name: quic, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport, downstream_tls_context: ` + tlsCtx + `}}, ` + hcmFilter("HTTP3"),
			"filter_chains[0].transport_socket: a QUIC transport socket needs a UDP listener", nil},
		{"HTTP/3 codec on TCP", tlsSocket + ", " + hcmFilter("HTTP3"), "HTTP/3 codec configured on non-QUIC listener.", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := yaml.YAMLToJSON([]byte("name: l\naddress: {socket_address: {address: 127.0.0.1, port_value: 1}}\nfilter_chains: [{" + tc.chain + "}]"))
			if err != nil {
				t.Fatal(err)
			}
			lp := &listenerv3.Listener{}
			if err := protojson.Unmarshal(j, lp); err != nil {
				t.Fatal(err)
			}
			reg := filter.NewRegistry()
			reg.Register(filterrouter.Builder{})
			l, err := CompileListener(lp, reg, stats.New(), nil)
			switch {
			case tc.wantErr != "":
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
			case err != nil:
				t.Fatal(err)
			case !tc.check(l):
				t.Errorf("compiled chain: %+v, HasTLS %v", l.Chains[0], l.HasTLS)
			}
		})
	}
}
