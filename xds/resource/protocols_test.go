package resource

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
)

// tlsListenerYAML is a TCP listener terminating TLS with ALPN h2 and
// http/1.1, serving HTTP/2 with extended CONNECT.
const tlsListenerYAML = `
name: tls
address: {socket_address: {address: 127.0.0.1, port_value: 10443}}
filter_chains:
- transport_socket_connect_timeout: 5s
  transport_socket:
    name: envoy.transport_sockets.tls
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
      require_client_certificate: false
      session_timeout: 300s
      disable_stateless_session_resumption: true
      common_tls_context:
        alpn_protocols: [h2, http/1.1]
        tls_params:
          tls_minimum_protocol_version: TLSv1_2
          tls_maximum_protocol_version: TLSv1_3
          cipher_suites: [ECDHE-ECDSA-AES128-GCM-SHA256]
          ecdh_curves: [X25519]
        tls_certificates:
        - certificate_chain: {filename: /etc/hop/cert.pem}
          private_key: {environment_variable: HOP_KEY}
        validation_context:
          trusted_ca: {inline_string: "-----BEGIN CERTIFICATE-----"}
          match_typed_subject_alt_names: [{san_type: DNS, matcher: {suffix: .example.com}}]
          match_subject_alt_names: [{exact: client}]
          trust_chain_verification: VERIFY_TRUST_CHAIN
  filters:
  - name: hcm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: tls
      codec_type: AUTO
      stream_error_on_invalid_http_message: true
      http2_protocol_options:
        allow_connect: true
        max_concurrent_streams: 100
        initial_stream_window_size: 65536
        initial_connection_window_size: 1048576
        hpack_table_size: 4096
        override_stream_error_on_invalid_http_message: false
      route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c}}]}]}
      http_filters: [{name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`

// tlsValidation is the validation context of tlsListenerYAML.
const tlsValidation = `        validation_context:
          trusted_ca: {inline_string: "-----BEGIN CERTIFICATE-----"}
          match_typed_subject_alt_names: [{san_type: DNS, matcher: {suffix: .example.com}}]
          match_subject_alt_names: [{exact: client}]
          trust_chain_verification: VERIFY_TRUST_CHAIN
`

// quicListenerYAML is a UDP listener serving HTTP/3 with extended CONNECT.
const quicListenerYAML = `
name: h3
address: {socket_address: {address: 127.0.0.1, port_value: 10443, protocol: UDP}}
udp_listener_config:
  quic_options:
    idle_timeout: 60s
    crypto_handshake_timeout: 10s
    enabled: {default_value: true, runtime_key: quic.enabled}
    packets_to_read_to_connection_count_ratio: 32
    max_sessions_per_event_loop: 16
    send_disable_active_migration: false
    quic_protocol_options:
      max_concurrent_streams: 100
      initial_stream_window_size: 65536
      initial_connection_window_size: 1048576
      idle_network_timeout: 30s
      connection_keepalive: {max_interval: 10s, initial_interval: 1s}
      num_timeouts_to_trigger_port_migration: 4
      enable_scone: false
filter_chains:
- transport_socket:
    name: envoy.transport_sockets.quic
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport
      enable_early_data: false
      downstream_tls_context:
        common_tls_context:
          tls_certificates: [{certificate_chain: {filename: cert.pem}, private_key: {filename: key.pem}}]
  filters:
  - name: hcm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: h3
      codec_type: HTTP3
      http3_protocol_options:
        allow_extended_connect: true
        override_stream_error_on_invalid_http_message: true
        disallow_obs_text: true
      route_config: {virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c}}]}]}
      http_filters: [{name: router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}]
`

// edit replaces the first occurrence of each old string in y by its new
// one, failing the test when one is missing.
func edit(t *testing.T, y string, oldNew ...string) string {
	t.Helper()
	for i := 0; i+1 < len(oldNew); i += 2 {
		if !strings.Contains(y, oldNew[i]) {
			t.Fatalf("edit: %q not found", oldNew[i])
		}
		y = strings.Replace(y, oldNew[i], oldNew[i+1], 1)
	}
	return y
}

func TestValidateListenerHTTP2HTTP3TLS(t *testing.T) {
	const (
		tlsPath  = "filter_chains[0].transport_socket.typed_config"
		hcmPath  = "filter_chains[0].filters[0].typed_config"
		quicPath = "udp_listener_config.quic_options"
	)
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "TLS listener serving HTTP/2 with allow_connect", yaml: tlsListenerYAML},
		{name: "HTTP/3 listener with a QUIC transport socket", yaml: quicListenerYAML},
		{
			name: "system roots",
			yaml: edit(t, tlsListenerYAML, tlsValidation, "        validation_context: {system_root_certs: {}, allow_expired_certificate: true}\n"),
		},
		{
			// Envoy's proto rules make it require
			// validation_context_sds_secret_config: SDS.
			name:    "combined validation context",
			yaml:    edit(t, tlsListenerYAML, tlsValidation, "        combined_validation_context: {default_validation_context: {system_root_certs: {}}}\n"),
			wantErr: tlsPath + ".common_tls_context.combined_validation_context: unsupported field",
		},
		{
			name:    "HTTP/2 option hop does not implement",
			yaml:    edit(t, tlsListenerYAML, "hpack_table_size: 4096", "custom_settings_parameters: [{identifier: 8, value: 1}]"),
			wantErr: hcmPath + ".http2_protocol_options.custom_settings_parameters: unsupported field",
		},
		{
			name:    "HTTP/2 keepalive is for clusters",
			yaml:    edit(t, tlsListenerYAML, "hpack_table_size: 4096", "connection_keepalive: {interval: 1s, timeout: 1s}"),
			wantErr: hcmPath + ".http2_protocol_options.connection_keepalive: unsupported field here (supported in clusters only)",
		},
		{
			name:    "HTTP/3 option hop does not implement",
			yaml:    edit(t, quicListenerYAML, "disallow_obs_text: true", "allow_metadata: true"),
			wantErr: hcmPath + ".http3_protocol_options.allow_metadata: unsupported field",
		},
		{
			name:    "HTTP/3 obs-text",
			yaml:    edit(t, quicListenerYAML, "disallow_obs_text: true", "disallow_obs_text: false"),
			wantErr: hcmPath + ".http3_protocol_options.disallow_obs_text: unsupported value false (hop supports true only)",
		},
		{
			name:    "unknown transport socket",
			yaml:    `{filter_chains: [{transport_socket: {name: alts, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts, handshaker_service: "127.0.0.1:1"}}}]}`,
			wantErr: tlsPath + `: unsupported extension type "type.googleapis.com/envoy.extensions.transport_sockets.alts.v3.Alts"`,
		},
		{
			name:    "upstream TLS context on a listener",
			yaml:    `{filter_chains: [{transport_socket: {name: tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, sni: a}}}]}`,
			wantErr: tlsPath + `: unsupported extension type "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"`,
		},
		{
			name:    "session ticket keys",
			yaml:    edit(t, tlsListenerYAML, "disable_stateless_session_resumption: true", "session_ticket_keys: {keys: [{inline_string: k}]}"),
			wantErr: tlsPath + ".session_ticket_keys: unsupported field",
		},
		{
			name:    "SDS certificates",
			yaml:    edit(t, tlsListenerYAML, "alpn_protocols: [h2, http/1.1]", "tls_certificate_sds_secret_configs: [{name: cert}]"),
			wantErr: tlsPath + ".common_tls_context.tls_certificate_sds_secret_configs: unsupported field",
		},
		{
			name:    "certificate revocation list",
			yaml:    edit(t, tlsListenerYAML, "trust_chain_verification: VERIFY_TRUST_CHAIN", "crl: {filename: crl.pem}"),
			wantErr: tlsPath + ".common_tls_context.validation_context.crl: unsupported field",
		},
		{
			// The proto rules of an unpacked TLS context run after the walk.
			name:    "TLS proto rules are checked",
			yaml:    edit(t, tlsListenerYAML, "{san_type: DNS, matcher: {suffix: .example.com}}", "{san_type: DNS}"),
			wantErr: tlsPath + ".common_tls_context.validation_context.match_typed_subject_alt_names[0].matcher: value is required",
		},
		{
			name:    "QUIC 0-RTT",
			yaml:    edit(t, quicListenerYAML, "enable_early_data: false", "enable_early_data: true"),
			wantErr: tlsPath + ".enable_early_data: unsupported value true (hop supports false only)",
		},
		{
			name:    "QUIC resumption switch",
			yaml:    edit(t, quicListenerYAML, "enable_early_data: false", "enable_resumption: false"),
			wantErr: tlsPath + ".enable_resumption: unsupported field",
		},
		{
			name:    "QUIC listener turned off",
			yaml:    edit(t, quicListenerYAML, "default_value: true", "default_value: false"),
			wantErr: quicPath + ".enabled.default_value: unsupported value false (hop supports true only)",
		},
		{
			name:    "QUIC proof source",
			yaml:    edit(t, quicListenerYAML, "idle_timeout: 60s", "proof_source_config: {name: p, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"),
			wantErr: quicPath + ".proof_source_config: unsupported field",
		},
		{
			name:    "QUIC packet length",
			yaml:    edit(t, quicListenerYAML, "idle_network_timeout: 30s", "max_packet_length: 1350"),
			wantErr: quicPath + ".quic_protocol_options.max_packet_length: unsupported field",
		},
		{
			name:    "UDP packet writer",
			yaml:    edit(t, quicListenerYAML, "udp_listener_config:", "udp_listener_config:\n  udp_packet_packet_writer_config: {name: w, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}"),
			wantErr: "udp_listener_config.udp_packet_packet_writer_config: unsupported field",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateListener(fromYAML(t, &listenerv3.Listener{}, tt.yaml)), tt.wantErr)
		})
	}
}

// h2TLSClusterYAML is a cluster speaking HTTP/2 over TLS.
const h2TLSClusterYAML = `
name: h2
type: STRICT_DNS
connect_timeout: 1s
load_assignment: {cluster_name: h2, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: backend, port_value: 443}}}}]}]}
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    common_http_protocol_options: {idle_timeout: 60s}
    explicit_http_config:
      http2_protocol_options:
        allow_connect: true
        max_concurrent_streams: 100
        initial_stream_window_size: 65536
        initial_connection_window_size: 1048576
        hpack_table_size: 4096
        connection_keepalive: {interval: 30s, timeout: 5s, interval_jitter: {value: 10}}
transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext
    sni: backend.example.com
    max_session_keys: 4
    common_tls_context:
      alpn_protocols: [h2]
      tls_params: {tls_maximum_protocol_version: TLSv1_3}
      tls_certificates: [{certificate_chain: {filename: c.pem}, private_key: {filename: k.pem}}]
      validation_context:
        trusted_ca: {filename: ca.pem}
        match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://"}}]
`

func TestValidateClusterHTTP2TLS(t *testing.T) {
	const (
		optsPath = `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`
		tlsPath  = "transport_socket.typed_config"
	)
	explicitH2 := "explicit_http_config:\n      http2_protocol_options:"
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{name: "explicit HTTP/2 over TLS", yaml: h2TLSClusterYAML},
		{
			name: "auto_config",
			yaml: edit(t, h2TLSClusterYAML, explicitH2, "auto_config:\n      http_protocol_options: {accept_http_10: true}\n      http2_protocol_options:"),
		},
		{
			name: "use_downstream_protocol_config",
			yaml: edit(t, h2TLSClusterYAML, explicitH2, "use_downstream_protocol_config:\n      http_protocol_options: {}\n      http2_protocol_options:"),
		},
		{
			name: "deprecated cluster fields",
			yaml: `{name: c, http2_protocol_options: {allow_connect: true, max_concurrent_streams: 10}, protocol_selection: USE_DOWNSTREAM_PROTOCOL}`,
		},
		{
			name:    "HTTP/2 option hop does not implement",
			yaml:    edit(t, h2TLSClusterYAML, "hpack_table_size: 4096", "custom_settings_parameters: [{identifier: 8, value: 1}]"),
			wantErr: optsPath + ".explicit_http_config.http2_protocol_options.custom_settings_parameters: unsupported field",
		},
		{
			name:    "downstream-only HTTP/2 option",
			yaml:    `{name: c, http2_protocol_options: {override_stream_error_on_invalid_http_message: true}}`,
			wantErr: "http2_protocol_options.override_stream_error_on_invalid_http_message: unsupported field here (supported in the HTTP connection manager only)",
		},
		{
			name:    "keepalive idle interval",
			yaml:    edit(t, h2TLSClusterYAML, "interval_jitter: {value: 10}", "connection_idle_interval: 1s"),
			wantErr: optsPath + ".explicit_http_config.http2_protocol_options.connection_keepalive.connection_idle_interval: unsupported field",
		},
		{
			name:    "auto_config with HTTP/3",
			yaml:    edit(t, h2TLSClusterYAML, explicitH2, "auto_config:\n      http3_protocol_options: {}\n      http2_protocol_options:"),
			wantErr: optsPath + ".auto_config.http3_protocol_options: unsupported field",
		},
		{
			name:    "renegotiation",
			yaml:    edit(t, h2TLSClusterYAML, "max_session_keys: 4", "allow_renegotiation: true"),
			wantErr: tlsPath + ".allow_renegotiation: unsupported field",
		},
		{
			name:    "SNI-based SAN validation",
			yaml:    edit(t, h2TLSClusterYAML, "max_session_keys: 4", "auto_sni_san_validation: true"),
			wantErr: tlsPath + ".auto_sni_san_validation: unsupported field",
		},
		{
			name:    "downstream TLS context on a cluster",
			yaml:    edit(t, h2TLSClusterYAML, "UpstreamTlsContext\n    sni: backend.example.com\n    max_session_keys: 4", "DownstreamTlsContext"),
			wantErr: tlsPath + `: unsupported extension type "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"`,
		},
		{
			name:    "UDP endpoint",
			yaml:    edit(t, h2TLSClusterYAML, "port_value: 443", "port_value: 443, protocol: UDP"),
			wantErr: "load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.protocol: unsupported value UDP here (hop supports TCP; UDP in a listener's address only)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateCluster(fromYAML(t, &clusterv3.Cluster{}, tt.yaml)), tt.wantErr)
		})
	}
}

// TestIssue4Configs validates the example configurations of
// testdata/issue4 (a TLS listener serving HTTP/2 with allow_connect, an
// HTTP/3 listener with a QUIC transport socket, HTTP/2 clusters with an
// UpstreamTlsContext) as whole bootstraps. `hop --mode validate -c` runs
// the data-plane compilers on them too.
func TestIssue4Configs(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "..", "testdata", "issue4", "*.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("testdata/issue4: %d files, %v", len(files), err)
	}
	for _, name := range files {
		t.Run(filepath.Base(name), func(t *testing.T) {
			y, err := os.ReadFile(name)
			if err != nil {
				t.Fatal(err)
			}
			checkErr(t, Validate(fromYAML(t, &bootstrapv3.Bootstrap{}, string(y))), "")
		})
	}
}
