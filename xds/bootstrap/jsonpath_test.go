package bootstrap

import (
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	_ "google.golang.org/protobuf/types/known/fieldmaskpb"
)

// TestLocateAgreesWithProtojson checks locate against protojson itself:
// where locate finds nothing protojson must accept the input, and where it
// reports a problem protojson must refuse it. Inputs are decoded as the
// named message type.
func TestLocateAgreesWithProtojson(t *testing.T) {
	const (
		bootstrap = "envoy.config.bootstrap.v3.Bootstrap"
		cluster   = "envoy.config.cluster.v3.Cluster"
		match     = "envoy.config.route.v3.RouteMatch"
		int64r    = "envoy.type.v3.Int64Range"
		percent   = "envoy.type.v3.Percent"
		source    = "envoy.config.core.v3.DataSource"
		node      = "envoy.config.core.v3.Node"
		anyT      = "google.protobuf.Any"
	)
	tests := []struct {
		msg, json, wantErr string
	}{
		{cluster, `{"name": "c", "type": 1}`, ""},
		{cluster, `{"type": 1.5}`, "type: want one of STATIC, STRICT_DNS, LOGICAL_DNS, EDS, ORIGINAL_DST, got 1.5"},
		{cluster, `{"name": null, "health_checks": null}`, ""},
		{cluster, `{"name": 5}`, "name: want string, got 5"},
		{cluster, `{"connect_timeout": "1s", "connectTimeout": "2s"}`, `connect_timeout: set twice, as "connectTimeout" and "connect_timeout"`},
		{cluster, `{"connect_timeout": "1.s"}`, ""},
		{cluster, `{"connect_timeout": ".5s"}`, ""},
		{cluster, `{"connect_timeout": "-0.000000001s"}`, ""},
		{cluster, `{"connect_timeout": "1.0000000001s"}`, `connect_timeout: want duration such as "1.5s", got "1.0000000001s"`},
		{cluster, `{"connect_timeout": "315576000001s"}`, `connect_timeout: want duration such as "1.5s", got "315576000001s"`},
		{cluster, `{"per_connection_buffer_limit_bytes": "5"}`, ""},
		{cluster, `{"per_connection_buffer_limit_bytes": -1}`, "per_connection_buffer_limit_bytes: want uint32, got -1"},
		{cluster, `{"per_connection_buffer_limit_bytes": null}`, ""},
		{cluster, `{"respect_dns_ttl": "true"}`, `respect_dns_ttl: want bool, got "true"`},
		{cluster, `{"load_assignment": {"endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"port_value": "8e1"}}}}]}]}}`, ""},
		{cluster, `{"load_assignment": {"endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"port_value": 4294967296}}}}]}]}}`,
			"load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: want uint32, got 4294967296"},
		{cluster, `{"load_assignment": {"endpoints": [null]}}`, "load_assignment.endpoints[0]: want object, got null"},
		{cluster, `{"typed_extension_protocol_options": {"k": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": "1s"}}}`, ""},
		{cluster, `{"typed_extension_protocol_options": {"k": {"@type": "type.googleapis.com/google.protobuf.Duration", "value": 1}}}`,
			`typed_extension_protocol_options["k"].value: want duration such as "1.5s", got 1`},
		{cluster, `{"typed_extension_protocol_options": {"k": {"@type": "type.googleapis.com/google.protobuf.Empty", "value": {}}}}`, ""},
		{cluster, `{"typed_extension_protocol_options": {"k": {}}}`, ""},
		{cluster, `{"typed_extension_protocol_options": {"k": {"x": 1}}}`, `typed_extension_protocol_options["k"]: missing "@type"`},
		{cluster, `{"typed_extension_protocol_options": {"k": {"@type": 1}}}`, `typed_extension_protocol_options["k"].@type: want type URL string, got 1`},
		{cluster, `{"metadata": {"filter_metadata": {"a": {"x": [1, {"y": null}]}}}}`, ""},
		{cluster, `{"metadata": {"filter_metadata": {"a": [1]}}}`, `metadata.filter_metadata["a"]: want object, got array`},
		{match, `{"prefix": "/", "path": "/a"}`, "prefix: oneof path_specifier is already set by path"},
		{match, `{"prefix": null, "path": "/a"}`, ""},
		{int64r, `{"start": "9223372036854775807", "end": -9223372036854775808}`, ""},
		{int64r, `{"start": "9223372036854775808"}`, `start: want int64, got "9223372036854775808"`},
		{int64r, `{"start": " 1"}`, `start: want int64, got " 1"`},
		{percent, `{"value": "NaN"}`, ""},
		{percent, `{"value": 1e308}`, ""},
		{percent, `{"value": "nan"}`, `value: want double, got "nan"`},
		{source, `{"inline_bytes": "aGk="}`, ""},
		{source, `{"inline_bytes": "aGk"}`, ""},
		{source, `{"inline_bytes": "a$"}`, `inline_bytes: want base64 string, got "a$"`},
		{node, `{"metadata": 1}`, "metadata: want object, got 1"},
		{node, `{"user_agent_build_version": {"metadata": {"a": 1}}}`, ""},
		{anyT, `{"@type": "type.googleapis.com/google.protobuf.Timestamp", "value": "2020-01-01T00:00:00Z"}`, ""},
		{anyT, `{"@type": "type.googleapis.com/google.protobuf.Timestamp", "value": "2020-01-01"}`, `value: want RFC 3339 timestamp, got "2020-01-01"`},
		{anyT, `{"@type": "type.googleapis.com/google.protobuf.Value", "value": null}`, ""},
		{anyT, `{"@type": "type.googleapis.com/google.protobuf.FieldMask", "value": "a,b"}`, ""},
		{anyT, `{"@type": "type.googleapis.com/google.protobuf.UInt32Value", "value": "7"}`, ""},
		{anyT, `{"@type": "type.googleapis.com/google.protobuf.UInt32Value", "extra": 1, "value": 7}`, "extra: unknown field"},
		{anyT, `{"@type": "type.googleapis.com/google.protobuf.Duration"}`, `missing "value"`},
		{bootstrap, `[]`, "want object, got array"},
		{bootstrap, `{"node": {"id": "n"}, "static_resources": {"listeners": [{"name": "l", "filter_chains": [{"filters": [{"name": "f", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", "statPrefix": "s", "http_filters": [{"name": "r", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}]}}]}]}]}}`, ""},
		// Beneath an unsupported field or extension, the problem is reported as that.
		{bootstrap, `{"stats_flush_interval": 5}`, "stats_flush_interval: unsupported field"},
		{bootstrap, `{"static_resources": {"listeners": [{"filter_chains": [{"filters": [{"typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo", "stat_prefx": "x"}}]}]}]}}`,
			`static_resources.listeners[0].filter_chains[0].filters[0].typed_config: unsupported extension type "type.googleapis.com/envoy.extensions.filters.network.echo.v3.Echo"`},
		{bootstrap, `{"static_resources": {"listeners": [{"filter_chains": [{"filters": [{"typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"}}]}]}], "secrets": 1}}`,
			`static_resources.secrets: unsupported field`},
		// Inside opaque fields only the JSON types matter.
		{bootstrap, `{"node": {"locality": {"zone": 1}}}`, "node.locality.zone: want string, got 1"},
	}
	for _, tt := range tests {
		t.Run(tt.json, func(t *testing.T) {
			mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(tt.msg))
			if err != nil {
				t.Fatal(err)
			}
			got := locate([]byte(tt.json), mt.Descriptor(), tt.msg == bootstrap)
			gotText := ""
			if got != nil {
				gotText = got.Error()
			}
			if gotText != tt.wantErr {
				t.Errorf("locate:\n got: %s\nwant: %s", gotText, tt.wantErr)
			}
			perr := protojson.Unmarshal([]byte(tt.json), mt.New().Interface())
			if (perr == nil) != (tt.wantErr == "") {
				t.Errorf("protojson disagrees: %v", perr)
			}
		})
	}
}
