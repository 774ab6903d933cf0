package upstream

import (
	"fmt"

	"github.com/hopproxy/hop/pkg/fieldcheck"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// fieldSet lists the proto fields, by name, that may be set in a message.
// A nil value accepts the field and everything inside it (its meaning is
// checked, or deliberately ignored, by the compile code); a non-nil value
// lists what may be set inside that message (or inside each element of a
// repeated field or map).
type fieldSet = fieldcheck.Tree

// http1Fields are the Http1ProtocolOptions an HTTP/1.1 client may carry:
// net/http already accepts trailers and chunked framing, and the others
// only affect servers.
var http1Fields = fieldSet{
	"enable_trailers":      nil,
	"allow_chunked_length": nil,
	"accept_http_10":       nil,
	"override_stream_error_on_invalid_http_message": nil,
}

// http2Fields are the Http2ProtocolOptions hop applies to an HTTP/2
// upstream (see h2Options); allow_connect is accepted (an extended CONNECT
// is sent whenever the peer allows it, see RoundTrip).
var http2Fields = fieldSet{
	"hpack_table_size":               nil,
	"max_concurrent_streams":         nil,
	"initial_stream_window_size":     nil,
	"initial_connection_window_size": nil,
	"allow_connect":                  nil,
	"connection_keepalive": {
		"interval":        nil,
		"timeout":         nil,
		"interval_jitter": nil, // accepted; x/net pings without jitter
	},
}

// commonHTTPFields are the core.v3.HttpProtocolOptions hop applies.
var commonHTTPFields = fieldSet{
	"idle_timeout":                nil,
	"max_requests_per_connection": nil,
	"max_response_headers_kb":     nil,
}

// claFields is what hop supports in a ClusterLoadAssignment, inline in
// Cluster.load_assignment or from EDS; see the package doc.
var claFields = fieldSet{
	"cluster_name": nil,
	"endpoints": {
		"locality":              nil,
		"metadata":              nil,
		"load_balancing_weight": nil,
		"priority":              nil, // checked in compile
		"lb_endpoints": {
			"endpoint": {
				"address": {
					"socket_address": {
						"protocol":    nil, // checked in compile
						"address":     nil,
						"port_value":  nil,
						"ipv4_compat": nil,
					},
					"envoy_internal_address": {
						"server_listener_name": nil,
						"endpoint_id":          nil,
					},
				},
				"hostname":            nil,
				"health_check_config": nil,
			},
			"health_status":         nil,
			"metadata":              nil,
			"load_balancing_weight": nil,
		},
	},
	"policy": {
		"overprovisioning_factor":  nil,
		"weighted_priority_health": nil,
	},
}

// clusterFields is every Cluster field hop supports; see the package doc.
var clusterFields = fieldSet{
	"name":                              nil,
	"alt_stat_name":                     nil,
	"type":                              nil, // checked in compile
	"connect_timeout":                   nil,
	"per_connection_buffer_limit_bytes": nil,
	"lb_policy":                         nil, // checked in compile
	"original_dst_lb_config": {
		"use_http_header":        nil,
		"http_header_name":       nil,
		"upstream_port_override": nil,
	},
	"load_assignment": claFields,
	"eds_cluster_config": {
		"eds_config":   nil, // the xDS layer subscribes with it
		"service_name": nil,
	},
	"max_requests_per_connection":      nil,
	"circuit_breakers":                 nil, // accepted, not enforced
	"common_http_protocol_options":     commonHTTPFields,
	"http_protocol_options":            http1Fields,
	"http2_protocol_options":           http2Fields,
	"typed_extension_protocol_options": nil, // checked in compile
	"dns_refresh_rate":                 nil,
	"dns_jitter":                       nil,
	"dns_failure_refresh_rate":         nil,
	"respect_dns_ttl":                  nil,
	"dns_lookup_family":                nil,
	"wait_for_warm_on_init":            nil,
	"cleanup_interval":                 nil,
	"upstream_bind_config": {
		"source_address": {
			"address":    nil,
			"port_value": nil,
		},
	},
	"common_lb_config": {
		"healthy_panic_threshold": nil,
	},
	"transport_socket":   nil, // checked by pkg/tlsconfig
	"metadata":           nil,
	"protocol_selection": nil, // checked in compile
	"upstream_connection_options": {
		"tcp_keepalive": nil,
	},
	"close_connections_on_host_health_failure": nil,
	"ignore_health_on_host_removal":            nil,
}

// httpOptionsFields is what hop supports inside
// envoy.extensions.upstreams.http.v3.HttpProtocolOptions. The HTTP/3
// members are accepted here and rejected by compile with a clearer message.
var httpOptionsFields = fieldSet{
	"common_http_protocol_options": commonHTTPFields,
	"explicit_http_config": {
		"http_protocol_options":  http1Fields,
		"http2_protocol_options": http2Fields,
		"http3_protocol_options": nil,
	},
	"use_downstream_protocol_config": {
		"http_protocol_options":  http1Fields,
		"http2_protocol_options": http2Fields,
		"http3_protocol_options": nil,
	},
	"auto_config": {
		"http_protocol_options":  http1Fields,
		"http2_protocol_options": http2Fields,
		"http3_protocol_options": nil,
	},
}

// checkFields returns an error naming the first populated field of m (in
// field-number order, depth first) that allowed does not list.
func checkFields(m protoreflect.Message, allowed fieldSet, path string) error {
	if p := fieldcheck.Unsupported(m, allowed, path); p != "" {
		return fmt.Errorf("%s: %w", p, ErrUnsupported)
	}
	return nil
}
