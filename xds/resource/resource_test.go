package resource

import (
	"errors"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	// Types hop does not implement, registered so test inputs can name them.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/mongo_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/alts/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// fromYAML decodes a message written in Envoy's YAML form.
func fromYAML[M proto.Message](t *testing.T, m M, y string) M {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(y))
	if err != nil {
		t.Fatalf("yaml: %v", err)
	}
	if err := protojson.Unmarshal(js, m); err != nil {
		t.Fatalf("protojson: %v", err)
	}
	return m
}

// listenerYAML is a listener with one HCM; %HCM% is replaced by extra HCM
// fields and %FILTERS% by its http_filters.
const listenerYAML = `
name: l
address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
filter_chains:
- filters:
  - name: hcm
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: ingress
      %HCM%
      route_config:
        virtual_hosts:
        - name: app
          domains: ["*"]
          routes:
          - match: {prefix: "/"}
            route: {cluster: c, upgrade_configs: [{upgrade_type: websocket}]}
      http_filters:
      %FILTERS%
      - name: router
        typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
`

func listener(t *testing.T, hcm, filters string) *listenerv3.Listener {
	t.Helper()
	y := strings.ReplaceAll(listenerYAML, "%HCM%", hcm)
	y = strings.ReplaceAll(y, "%FILTERS%", filters)
	return fromYAML(t, &listenerv3.Listener{}, y)
}

const routerAny = `{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`

func TestValidateListener(t *testing.T) {
	const hcmPath = "filter_chains[0].filters[0].typed_config"
	tests := []struct {
		name    string
		l       *listenerv3.Listener
		wantErr string // "" for success
	}{
		{name: "valid", l: listener(t, "", "")},
		{
			name: "unsupported network filter",
			l: fromYAML(t, &listenerv3.Listener{}, `
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy, stat_prefix: m}`),
			wantErr: `filter_chains[0].filters[0].typed_config: unsupported extension type "type.googleapis.com/envoy.extensions.filters.network.mongo_proxy.v3.MongoProxy"`,
		},
		{
			name: "HTTP filter type in a network filter slot",
			l: fromYAML(t, &listenerv3.Listener{}, `
filter_chains:
- filters:
  - name: envoy.filters.network.http_connection_manager
    typed_config: `+routerAny),
			wantErr: hcmPath + `: unsupported extension type "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"`,
		},
		{
			name: "lookup ignores the filter name",
			l: fromYAML(t, &listenerv3.Listener{}, `
filter_chains:
- filters:
  - name: some.made.up.name
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
      stat_prefix: s
      route_config: {}
      http_filters: [{name: whatever, typed_config: `+routerAny+`}]`),
		},
		{
			name:    "unsupported HTTP filter",
			l:       listener(t, "", `- {name: envoy.filters.http.cors, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}`),
			wantErr: hcmPath + `.http_filters[0].typed_config: unsupported extension type "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"`,
		},
		{
			name: "optional unsupported HTTP filter is skipped",
			l:    listener(t, "", `- {name: envoy.filters.http.cors, is_optional: true, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors}}`),
		},
		{
			name: "optional supported HTTP filter is still checked",
			l:    listener(t, "", `- {name: buffer, is_optional: true, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer}}`),
			// Buffer.max_request_bytes is required by its proto rules.
			wantErr: hcmPath + ".http_filters[0].typed_config.max_request_bytes: value is required and must not be nil.",
		},
		{
			name:    "HTTP filter without typed_config",
			l:       listener(t, "", `- {name: envoy.filters.http.buffer}`),
			wantErr: hcmPath + ".http_filters[0].typed_config: value is required",
		},
		{
			name: "network filter without typed_config",
			l: fromYAML(t, &listenerv3.Listener{}, `
filter_chains: [{filters: [{name: envoy.filters.network.http_connection_manager}]}]`),
			wantErr: "filter_chains[0].filters[0].typed_config: value is required",
		},
		{
			name:    "HTTP filter from ECDS",
			l:       listener(t, "", `- {name: x, config_discovery: {type_urls: [type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer]}}`),
			wantErr: hcmPath + ".http_filters[0].config_discovery: unsupported field",
		},
		{
			name: "TypedStruct is looked up by its inner type",
			l: listener(t, "", `- name: buffer
        typed_config:
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
          value: {max_request_bytes: 1024}`),
		},
		{
			name: "TypedStruct of an unsupported type",
			l: listener(t, "", `- name: cors
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors`),
			wantErr: hcmPath + `.http_filters[0].typed_config: unsupported extension type "type.googleapis.com/envoy.extensions.filters.http.cors.v3.Cors"`,
		},
		{
			name: "TypedStruct payload is walked",
			l: listener(t, "", `- name: buffer
        typed_config:
          "@type": type.googleapis.com/xds.type.v3.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
          value: {max_request_bytes: 0}`),
			wantErr: hcmPath + ".http_filters[0].typed_config.value.max_request_bytes: value must be greater than 0",
		},
		{
			name:    "unsupported field on the listener",
			l:       fromYAML(t, &listenerv3.Listener{}, `{name: l, tcp_backlog_size: 10}`),
			wantErr: "tcp_backlog_size: unsupported field",
		},
		{
			name:    "unsupported field inside typed_config",
			l:       listener(t, "http2_protocol_options: {allow_connect: true, custom_settings_parameters: [{identifier: 8, value: 1}]}", ""),
			wantErr: hcmPath + ".http2_protocol_options.custom_settings_parameters: unsupported field",
		},
		{
			name:    "unsupported field inside a nested filter",
			l:       listener(t, "", `- {name: router2, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router, dynamic_stats: false}}`),
			wantErr: hcmPath + ".http_filters[0].typed_config.dynamic_stats: unsupported field",
		},
		{
			name:    "unsupported enum value",
			l:       fromYAML(t, &listenerv3.Listener{}, strings.Replace(tlsListenerYAML, "san_type: DNS", "san_type: OTHER_NAME", 1)),
			wantErr: `filter_chains[0].transport_socket.typed_config.common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type: unsupported value OTHER_NAME (hop supports EMAIL, DNS, URI, IP_ADDRESS)`,
		},
		{
			name:    "proto rule inside typed_config: empty stat_prefix",
			l:       fromYAML(t, &listenerv3.Listener{}, strings.Replace(strings.ReplaceAll(strings.ReplaceAll(listenerYAML, "%HCM%", ""), "%FILTERS%", ""), "stat_prefix: ingress", `stat_prefix: ""`, 1)),
			wantErr: hcmPath + ".stat_prefix: value length must be at least 1 runes",
		},
		{
			name:    "proto rule on a required oneof",
			l:       fromYAML(t, &listenerv3.Listener{}, strings.Replace(strings.ReplaceAll(strings.ReplaceAll(listenerYAML, "%HCM%", ""), "%FILTERS%", ""), `{prefix: "/"}`, `{headers: [{name: x, present_match: true}]}`, 1)),
			wantErr: hcmPath + ".route_config.virtual_hosts[0].routes[0].match.path_specifier: value is required",
		},
		{
			name: "transport socket and listener filter",
			l: fromYAML(t, &listenerv3.Listener{}, `
listener_filters: [{name: tls, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}]
filter_chains:
- filter_chain_match: {server_names: [a.example], transport_protocol: tls}
  transport_socket: {name: raw, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}`),
		},
		{
			name:    "listener filter without typed_config",
			l:       fromYAML(t, &listenerv3.Listener{}, `{listener_filters: [{name: envoy.filters.listener.tls_inspector}]}`),
			wantErr: "listener_filters[0].typed_config: value is required",
		},
		{
			name:    "first error in declaration order",
			l:       fromYAML(t, &listenerv3.Listener{}, `{name: "", tcp_backlog_size: 1, freebind: true}`),
			wantErr: "freebind: unsupported field",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateListener(tt.l), tt.wantErr)
		})
	}
}

func TestValidateCluster(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{
			name: "valid",
			yaml: `
name: c
type: STRICT_DNS
connect_timeout: 0.25s
dns_lookup_family: V4_ONLY
load_assignment:
  cluster_name: c
  endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: backend, port_value: 80}}}, load_balancing_weight: 2}]}]
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    explicit_http_config: {http_protocol_options: {accept_http_10: true}}
transport_socket: {name: raw, typed_config: {"@type": type.googleapis.com/envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer}}
circuit_breakers: {thresholds: [{max_connections: 10}]}`,
		},
		{
			name:    "HTTP/3 upstream",
			yaml:    `{name: c, typed_extension_protocol_options: {h: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions, explicit_http_config: {http3_protocol_options: {}}}}}`,
			wantErr: `typed_extension_protocol_options["h"].explicit_http_config.http3_protocol_options: unsupported field`,
		},
		{
			name:    "unsupported load balancing policy",
			yaml:    `{name: c, lb_policy: LEAST_REQUEST}`,
			wantErr: "lb_policy: unsupported value LEAST_REQUEST (hop supports ROUND_ROBIN, RANDOM, CLUSTER_PROVIDED)",
		},
		{
			name: "ignored fields are not looked into",
			yaml: `{name: c, circuit_breakers: {thresholds: [{max_retries: 3, track_remaining: true}]}}`,
		},
		{
			name:    "custom cluster type",
			yaml:    `{name: c, cluster_type: {name: envoy.clusters.aggregate}}`,
			wantErr: "cluster_type: unsupported field",
		},
		{
			name:    "unsupported field",
			yaml:    `{name: c, type: STATIC, metadata: {}, lrs_server: {self: {}}}`,
			wantErr: "lrs_server: unsupported field",
		},
		{
			name:    "missing name",
			yaml:    `{type: STATIC}`,
			wantErr: "name: value length must be at least 1 runes",
		},
		{
			name: "wrong protocol options type",
			yaml: `
name: c
typed_extension_protocol_options:
  z: {"@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions}
  a: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`,
			wantErr: `typed_extension_protocol_options["a"]: unsupported extension type "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"`,
		},
		{
			name: "unsupported field in protocol options",
			yaml: `
name: c
typed_extension_protocol_options:
  envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
    "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
    upstream_http_protocol_options: {auto_sni: true}`,
			wantErr: `typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].upstream_http_protocol_options: unsupported field`,
		},
		{
			name:    "downstream-only transport socket on a cluster",
			yaml:    `{name: c, transport_socket: {name: t, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector}}}`,
			wantErr: `transport_socket.typed_config: unsupported extension type "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"`,
		},
		{
			name:    "proto rule in a list element",
			yaml:    `{name: c, load_assignment: {cluster_name: c, endpoints: [{lb_endpoints: [{}, {endpoint: {address: {socket_address: {address: a, port_value: 70000}}}}]}]}}`,
			wantErr: "load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.port_value: value must be less than or equal to 65535",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateCluster(fromYAML(t, &clusterv3.Cluster{}, tt.yaml)), tt.wantErr)
		})
	}
}

func TestValidateRouteConfiguration(t *testing.T) {
	tests := []struct {
		name    string
		yaml    string
		wantErr string
	}{
		{
			name: "valid",
			yaml: `
name: r
virtual_hosts:
- name: v
  domains: ["*"]
  typed_per_filter_config:
    envoy.filters.http.buffer: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig, disabled: true}
  routes:
  - match: {connect_matcher: {}}
    route: {cluster: c, upgrade_configs: [{upgrade_type: CONNECT, connect_config: {allow_post: true}}]}
  - match: {path: /r, headers: [{name: x, string_match: {exact: "y"}}]}
    redirect: {https_redirect: true}
  - match: {safe_regex: {regex: "^/d"}}
    direct_response: {status: 200, body: {inline_string: ok}}
    typed_per_filter_config:
      cors:
        "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
        is_optional: true
        config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy}`,
		},
		{
			name: "per-route config of an unsupported filter",
			yaml: `
virtual_hosts:
- name: v
  domains: ["*"]
  routes:
  - match: {prefix: /}
    direct_response: {status: 200}
    typed_per_filter_config:
      cors: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy}`,
			wantErr: `virtual_hosts[0].routes[0].typed_per_filter_config["cors"]: unsupported extension type "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"`,
		},
		{
			name: "per-route settings of a filter, not optional",
			yaml: `
virtual_hosts:
- name: v
  domains: ["*"]
  typed_per_filter_config:
    cors:
      "@type": type.googleapis.com/envoy.config.route.v3.FilterConfig
      config: {"@type": type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy}`,
			wantErr: `virtual_hosts[0].typed_per_filter_config["cors"].config: unsupported extension type "type.googleapis.com/envoy.extensions.filters.http.cors.v3.CorsPolicy"`,
		},
		{
			name:    "per-route config on the route configuration",
			yaml:    `{typed_per_filter_config: {x: {"@type": type.googleapis.com/envoy.config.route.v3.FilterConfig}}}`,
			wantErr: "typed_per_filter_config: unsupported field",
		},
		{
			name:    "unsupported route field",
			yaml:    `{virtual_hosts: [{name: v, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: c, retry_policy: {}}}]}]}`,
			wantErr: "virtual_hosts[0].routes[0].route.retry_policy: unsupported field",
		},
		{
			name:    "empty domains",
			yaml:    `{virtual_hosts: [{name: v}]}`,
			wantErr: "virtual_hosts[0].domains: value must contain at least 1 item(s)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkErr(t, ValidateRouteConfiguration(fromYAML(t, &routev3.RouteConfiguration{}, tt.yaml)), tt.wantErr)
		})
	}
}

// TestFieldErrorUnwrap checks that the protoc-gen-validate error stays
// reachable.
func TestFieldErrorUnwrap(t *testing.T) {
	err := ValidateCluster(&clusterv3.Cluster{})
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "name" {
		t.Fatalf("got %v, want a *FieldError at name", err)
	}
	var ve interface{ Field() string }
	if !errors.As(err, &ve) || ve.Field() != "Name" {
		t.Errorf("underlying validation error not reachable: %#v", fe.Err)
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Errorf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Errorf("no error, want %q", want)
	case want != "" && err.Error() != want:
		t.Errorf("error:\n got: %s\nwant: %s", err, want)
	}
}
