package resource

import "google.golang.org/protobuf/reflect/protoreflect"

// This file is the list of Envoy fields hop accepts. A populated field that
// is not listed here is rejected with "unsupported field"; an enum field
// with a value list accepts only those values. SUPPORTED.md is generated
// from this list; keep each group's comment short, it is copied there.
//
// Well-known types (Duration, wrappers, Struct, …) have no entries: they are
// values, not configuration, and the walk does not look inside them.

// fieldKind says what hop does with a populated field.
type fieldKind uint8

const (
	// honoured: hop implements the field; its value is checked further.
	honoured fieldKind = iota
	// opaque: hop accepts the value as a whole and does not interpret its
	// contents (node metadata, which is only sent to the control plane).
	opaque
	// ignored: accepted for compatibility with Envoy configs, no effect.
	ignored
)

// fieldRule is how hop treats one field of a message.
type fieldRule struct {
	name   protoreflect.Name
	kind   fieldKind
	values []protoreflect.Name // enum fields: the values hop implements; nil means all
	// only, for a google.protobuf.BoolValue field, is the one value hop
	// implements (the other asks for a feature hop lacks); anyBool: both.
	only boolValue
	// scope, when set, limits the rule to messages reached through one of
	// the scope's fields: elsewhere the field is unsupported or, when
	// scopedValues is set, only values are supported.
	scope        *scope
	scopedValues []protoreflect.Name // enum values supported within scope only
}

// boolValue is the value a BoolValue field is limited to.
type boolValue uint8

const (
	anyBool boolValue = iota
	onlyTrue
	onlyFalse
)

// scope is a part of the configuration where a message is used in its own
// way (Http2ProtocolOptions in the HCM and in clusters): the messages
// reached, directly or further down, through one of its fields.
type scope struct {
	label   string // "in clusters"; completes "supported ... only"
	through []protoreflect.FullName
}

// messageRules is the allowlist of one message.
type messageRules struct {
	message protoreflect.FullName
	note    string // one line for SUPPORTED.md; may be empty
	fields  []fieldRule
}

// f, opq, ign, enum and boolean build fieldRules tersely.
func f(name protoreflect.Name) fieldRule   { return fieldRule{name: name} }
func opq(name protoreflect.Name) fieldRule { return fieldRule{name: name, kind: opaque} }
func ign(name protoreflect.Name) fieldRule { return fieldRule{name: name, kind: ignored} }
func enum(name protoreflect.Name, values ...protoreflect.Name) fieldRule {
	return fieldRule{name: name, values: values}
}
func boolean(name protoreflect.Name, only bool) fieldRule {
	if only {
		return fieldRule{name: name, only: onlyTrue}
	}
	return fieldRule{name: name, only: onlyFalse}
}

// in limits a rule to a scope.
func (r fieldRule) in(s *scope) fieldRule { r.scope = s; return r }

// plus adds enum values that are supported within a scope only.
func (r fieldRule) plus(s *scope, values ...protoreflect.Name) fieldRule {
	r.scope, r.scopedValues = s, values
	return r
}

// Scopes.
var (
	listenerAddress = &scope{label: "in a listener's address", through: []protoreflect.FullName{
		"envoy.config.listener.v3.Listener.address",
	}}
	hcmHTTP2 = &scope{label: "in the HTTP connection manager", through: []protoreflect.FullName{
		"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.http2_protocol_options",
	}}
	clusterHTTP2 = &scope{label: "in clusters", through: []protoreflect.FullName{
		"envoy.config.cluster.v3.Cluster.http2_protocol_options",
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig.http2_protocol_options",
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig.http2_protocol_options",
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig.http2_protocol_options",
	}}
)

// Shared field sets.
var (
	headerMutations = []fieldRule{
		f("request_headers_to_add"), f("request_headers_to_remove"),
		f("response_headers_to_add"), f("response_headers_to_remove"),
	}
	socketAddress = []fieldRule{
		f("address"), f("port_value"), enum("protocol", "TCP").plus(listenerAddress, "UDP"), f("ipv4_compat"),
	}
)

func concat(sets ...[]fieldRule) []fieldRule {
	var out []fieldRule
	for _, s := range sets {
		out = append(out, s...)
	}
	return out
}

// supportedFields is the allowlist, grouped by message.
var supportedFields = []messageRules{
	// Bootstrap.
	{message: "envoy.config.bootstrap.v3.Bootstrap", fields: []fieldRule{
		f("node"), f("static_resources"), f("dynamic_resources"), f("admin"), ign("layered_runtime"),
		f("bootstrap_extensions"),
	}},
	{message: "envoy.config.core.v3.TypedExtensionConfig", fields: []fieldRule{f("name"), f("typed_config")}},
	{message: "envoy.extensions.bootstrap.internal_listener.v3.InternalListener", note: "Enables listeners with internal_listener and endpoints with envoy_internal_address. Internal connections are kernel socket pairs, buffered by the kernel.", fields: []fieldRule{
		ign("buffer_size_kb"),
	}},
	{message: "envoy.config.bootstrap.v3.Bootstrap.DynamicResources", fields: []fieldRule{
		f("lds_config"), f("cds_config"), f("ads_config"),
	}},

	// Config sources (xDS).
	{message: "envoy.config.core.v3.ConfigSource", note: "path is the deprecated form of path_config_source.", fields: []fieldRule{
		f("ads"), f("api_config_source"), f("path_config_source"), f("path"), f("initial_fetch_timeout"),
		enum("resource_api_version", "V3"),
	}},
	{message: "envoy.config.core.v3.ApiConfigSource", note: "REST is not supported; refresh_delay and request_timeout apply to REST only.", fields: []fieldRule{
		enum("api_type", "GRPC", "DELTA_GRPC"), enum("transport_api_version", "V3"), f("grpc_services"),
		f("set_node_on_first_message_only"), f("rate_limit_settings"), ign("refresh_delay"), ign("request_timeout"),
	}},
	{message: "envoy.config.core.v3.PathConfigSource", fields: []fieldRule{f("path"), f("watched_directory")}},
	{message: "envoy.config.core.v3.WatchedDirectory", fields: []fieldRule{f("path")}},
	{message: "envoy.config.core.v3.RateLimitSettings", fields: []fieldRule{f("max_tokens"), f("fill_rate")}},
	{message: "envoy.config.core.v3.GrpcService", fields: []fieldRule{
		f("envoy_grpc"), f("google_grpc"), ign("timeout"), f("initial_metadata"),
	}},
	{message: "envoy.config.core.v3.GrpcService.EnvoyGrpc", fields: []fieldRule{f("cluster_name"), f("authority")}},
	{message: "envoy.config.core.v3.GrpcService.GoogleGrpc", fields: []fieldRule{
		f("target_uri"), f("stat_prefix"), f("channel_credentials"),
	}},
	{message: "envoy.config.core.v3.GrpcService.GoogleGrpc.ChannelCredentials", fields: []fieldRule{
		f("ssl_credentials"), f("local_credentials"),
	}},
	{message: "envoy.config.core.v3.GrpcService.GoogleGrpc.SslCredentials", fields: []fieldRule{
		f("root_certs"), f("private_key"), f("cert_chain"),
	}},
	{message: "envoy.config.bootstrap.v3.Bootstrap.StaticResources", fields: []fieldRule{
		f("listeners"), f("clusters"),
	}},
	{message: "envoy.config.bootstrap.v3.Admin", note: "hop's admin interface writes no access log and keeps no profile file.", fields: []fieldRule{
		f("address"), ign("access_log_path"), ign("access_log"), ign("profile_path"),
	}},
	{message: "envoy.config.core.v3.Node", note: "Node identity is sent to the control plane as given.", fields: []fieldRule{
		f("id"), f("cluster"), opq("metadata"), opq("dynamic_parameters"), opq("locality"),
		f("user_agent_name"), f("user_agent_version"), opq("user_agent_build_version"),
		opq("extensions"), f("client_features"), opq("listening_addresses"),
	}},
	{message: "envoy.config.accesslog.v3.AccessLog", fields: []fieldRule{
		f("name"), f("typed_config"),
	}},
	{message: "envoy.extensions.access_loggers.file.v3.FileAccessLog", fields: []fieldRule{
		f("path"),
	}},

	// Addresses and metadata.
	{message: "envoy.config.core.v3.Address", fields: []fieldRule{f("socket_address"), f("envoy_internal_address")}},
	{message: "envoy.config.core.v3.EnvoyInternalAddress", fields: []fieldRule{f("server_listener_name"), f("endpoint_id")}},
	{message: "envoy.config.core.v3.SocketAddress", fields: socketAddress},
	{message: "envoy.config.core.v3.CidrRange", fields: []fieldRule{f("address_prefix"), f("prefix_len")}},
	{message: "envoy.config.core.v3.Metadata", fields: []fieldRule{opq("filter_metadata")}},
	{message: "envoy.config.core.v3.Locality", fields: []fieldRule{f("region"), f("zone"), f("sub_zone")}},
	{message: "envoy.config.core.v3.TransportSocket", fields: []fieldRule{f("name"), f("typed_config")}},

	// Listener.
	{message: "envoy.config.listener.v3.Listener", fields: []fieldRule{
		f("name"), f("address"), f("filter_chains"), f("default_filter_chain"), f("listener_filters"),
		f("stat_prefix"), ign("traffic_direction"), opq("metadata"), f("udp_listener_config"),
		f("internal_listener"),
	}},
	{message: "envoy.config.listener.v3.Listener.InternalListenerConfig", note: "A listener without a socket, reached by clusters whose endpoints name it (envoy_internal_address).", fields: []fieldRule{}},
	{message: "envoy.config.listener.v3.UdpListenerConfig", note: "Read for a UDP listener (socket_address.protocol UDP), which must be a QUIC listener serving HTTP/3.", fields: []fieldRule{
		f("quic_options"), f("downstream_socket_config"),
	}},
	{message: "envoy.config.core.v3.UdpSocketConfig", note: "quic-go sizes its receive buffers itself and uses GRO where the kernel offers it.", fields: []fieldRule{
		ign("max_rx_datagram_size"), ign("prefer_gro"),
	}},
	{message: "envoy.config.listener.v3.QuicProtocolOptions", fields: []fieldRule{
		f("quic_protocol_options"), f("idle_timeout"), f("crypto_handshake_timeout"), f("enabled"),
		ign("packets_to_read_to_connection_count_ratio"), boolean("send_disable_active_migration", false),
		ign("max_sessions_per_event_loop"),
	}},
	{message: "envoy.config.core.v3.RuntimeFeatureFlag", note: "hop has no runtime: default_value is the value.", fields: []fieldRule{
		boolean("default_value", true), ign("runtime_key"),
	}},
	{message: "envoy.config.core.v3.QuicProtocolOptions", note: "A QUIC listener's transport settings (quic_options.quic_protocol_options).", fields: []fieldRule{
		f("max_concurrent_streams"), f("initial_stream_window_size"), f("initial_connection_window_size"),
		ign("num_timeouts_to_trigger_port_migration"), f("connection_keepalive"), f("idle_network_timeout"),
		boolean("enable_scone", false),
	}},
	{message: "envoy.config.core.v3.QuicKeepAliveSettings", fields: []fieldRule{f("max_interval"), f("initial_interval")}},
	{message: "envoy.config.listener.v3.ListenerFilter", fields: []fieldRule{f("name"), f("typed_config")}},
	{message: "envoy.config.listener.v3.FilterChain", fields: []fieldRule{
		f("filter_chain_match"), f("filters"), f("name"), f("transport_socket"), f("transport_socket_connect_timeout"),
	}},
	{message: "envoy.config.listener.v3.FilterChainMatch", fields: []fieldRule{
		f("destination_port"), f("server_names"), f("transport_protocol"), f("application_protocols"),
		f("prefix_ranges"), f("source_prefix_ranges"), f("source_ports"),
	}},
	{message: "envoy.config.listener.v3.Filter", fields: []fieldRule{f("name"), f("typed_config")}},
	{message: "envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector", fields: []fieldRule{
		f("enable_ja3_fingerprinting"), f("enable_ja4_fingerprinting"), f("initial_read_buffer_size"),
		f("close_connection_on_client_hello_parsing_errors"), f("max_client_hello_size"),
	}},

	// TCP proxy.
	{message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy", note: "upstream_flush_* stats stay 0.", fields: []fieldRule{
		f("stat_prefix"), f("cluster"), f("weighted_clusters"), f("idle_timeout"), f("max_connect_attempts"),
		f("tunneling_config"), f("max_downstream_connection_duration"),
		f("max_downstream_connection_duration_jitter_percentage"), f("backoff_options"),
	}},
	{message: "envoy.config.core.v3.BackoffStrategy", fields: []fieldRule{f("base_interval"), f("max_interval")}},
	{message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.TunnelingConfig", note: "Over HTTP/1.1 CONNECT, HTTP/2 CONNECT and POST. The propagated response headers and trailers are kept on the connection; hop has no access log that reads them yet.", fields: []fieldRule{
		f("hostname"), f("use_post"), f("post_path"), f("headers_to_add"),
		f("propagate_response_headers"), f("propagate_response_trailers"),
		f("request_id_extension"), f("request_id_header"), f("request_id_metadata_key"),
	}},
	{message: "envoy.extensions.filters.network.http_connection_manager.v3.RequestIDExtension", fields: []fieldRule{f("typed_config")}},
	{message: "envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", note: "hop has no tracing: a uuid is generated for the tunnel request.", fields: []fieldRule{
		ign("pack_trace_reason"), ign("use_request_id_for_trace_sampling"),
	}},
	{message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster", fields: []fieldRule{f("clusters")}},
	{message: "envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy.WeightedCluster.ClusterWeight", fields: []fieldRule{
		f("name"), f("weight"),
	}},

	// HTTP connection manager.
	{message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", note: "access_log is not supported yet. codec_type HTTP3 needs a QUIC listener, which takes HTTP3 only; stream_error_on_invalid_http_message applies to HTTP/2 and HTTP/3.", fields: []fieldRule{
		enum("codec_type", "AUTO", "HTTP1", "HTTP2", "HTTP3"), f("stat_prefix"), f("route_config"), f("http_filters"),
		f("upgrade_configs"), f("http_protocol_options"), f("common_http_protocol_options"),
		f("stream_idle_timeout"), f("request_timeout"), f("request_headers_timeout"),
		f("max_request_headers_kb"), f("use_remote_address"), f("skip_xff_append"),
		f("generate_request_id"), f("preserve_external_request_id"), f("always_set_request_id_in_response"),
		f("server_name"), f("server_header_transformation"), f("strip_any_host_port"),
		f("strip_matching_host_port"), f("via"), f("rds"),
		f("http2_protocol_options"), f("http3_protocol_options"), f("stream_error_on_invalid_http_message"),
	}},
	{message: "envoy.extensions.filters.network.http_connection_manager.v3.Rds", fields: []fieldRule{
		f("config_source"), f("route_config_name"),
	}},
	{message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter", fields: []fieldRule{
		f("name"), f("typed_config"), f("is_optional"), f("disabled"),
	}},
	{message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig", fields: []fieldRule{
		f("upgrade_type"), f("filters"), f("enabled"),
	}},
	{message: "envoy.config.core.v3.Http1ProtocolOptions", note: "Shared by the HCM and clusters; enable_trailers, allow_chunked_length and override_stream_error_on_invalid_http_message describe what Go's HTTP stack does anyway.", fields: []fieldRule{
		f("accept_http_10"), f("default_host_for_http_10"), f("ignore_http_11_upgrade"),
		ign("enable_trailers"), ign("allow_chunked_length"), ign("override_stream_error_on_invalid_http_message"),
	}},
	{message: "envoy.config.core.v3.HttpProtocolOptions", note: "Shared by the HCM and clusters; each compiler rejects what does not apply to it.", fields: []fieldRule{
		f("idle_timeout"), f("max_headers_count"), f("max_stream_duration"), f("headers_with_underscores_action"),
		f("max_requests_per_connection"), f("max_response_headers_kb"),
	}},
	{message: "envoy.config.core.v3.Http2ProtocolOptions", note: "Shared by the HCM (downstream HTTP/2) and clusters (upstream HTTP/2).", fields: []fieldRule{
		f("hpack_table_size"), f("max_concurrent_streams"), f("initial_stream_window_size"),
		f("initial_connection_window_size"), f("allow_connect"),
		f("stream_error_on_invalid_http_messaging").in(hcmHTTP2),
		f("override_stream_error_on_invalid_http_message").in(hcmHTTP2),
		f("connection_keepalive").in(clusterHTTP2),
	}},
	{message: "envoy.config.core.v3.KeepaliveSettings", note: "HTTP/2 PING keepalive of upstream connections.", fields: []fieldRule{
		f("interval"), f("timeout"), ign("interval_jitter"),
	}},
	{message: "envoy.config.core.v3.Http3ProtocolOptions", note: "Downstream HTTP/3 (HCM codec_type HTTP3 on a QUIC listener); quic_protocol_options applies to upstream connections only in Envoy.", fields: []fieldRule{
		ign("quic_protocol_options"), f("override_stream_error_on_invalid_http_message"),
		f("allow_extended_connect"), boolean("disallow_obs_text", true),
	}},

	// HTTP filters.
	{message: "envoy.extensions.filters.http.router.v3.Router", fields: []fieldRule{
		f("suppress_envoy_headers"), ign("start_child_span"), f("reject_connect_request_early_data"),
	}},
	{message: "envoy.extensions.filters.http.buffer.v3.Buffer", fields: []fieldRule{f("max_request_bytes")}},
	{message: "envoy.config.route.v3.FilterConfig", note: "Per-route: turns a filter off (or on, if the HCM lists it disabled). config only with is_optional, and is then skipped: no filter hop implements has per-route settings.", fields: []fieldRule{
		f("disabled"), f("is_optional"), f("config"),
	}},

	// Routes.
	{message: "envoy.config.route.v3.RouteConfiguration", fields: concat([]fieldRule{
		f("name"), f("virtual_hosts"), f("most_specific_header_mutations_wins"),
		f("ignore_port_in_host_matching"), f("validate_clusters"), f("max_direct_response_body_size_bytes"),
	}, headerMutations)},
	{message: "envoy.config.route.v3.VirtualHost", fields: concat([]fieldRule{
		f("name"), f("domains"), f("routes"), f("typed_per_filter_config"),
	}, headerMutations)},
	{message: "envoy.config.route.v3.Route", fields: concat([]fieldRule{
		f("name"), f("match"), f("route"), f("redirect"), f("direct_response"), f("typed_per_filter_config"),
	}, headerMutations)},
	{message: "envoy.config.route.v3.RouteMatch", fields: []fieldRule{
		f("prefix"), f("path"), f("safe_regex"), f("path_separated_prefix"), f("connect_matcher"),
		f("case_sensitive"), f("headers"), f("query_parameters"),
	}},
	{message: "envoy.config.route.v3.HeaderMatcher", note: "The deprecated *_match forms are accepted.", fields: []fieldRule{
		f("name"), f("string_match"), f("present_match"), f("range_match"), f("invert_match"),
		f("treat_missing_header_as_empty"),
		f("exact_match"), f("safe_regex_match"), f("prefix_match"), f("suffix_match"), f("contains_match"),
	}},
	{message: "envoy.type.v3.Int64Range", fields: []fieldRule{f("start"), f("end")}},
	{message: "envoy.config.route.v3.QueryParameterMatcher", fields: []fieldRule{
		f("name"), f("string_match"), f("present_match"),
	}},
	{message: "envoy.config.route.v3.RouteAction", fields: []fieldRule{
		f("cluster"), f("weighted_clusters"), f("timeout"), f("idle_timeout"), f("prefix_rewrite"),
		f("host_rewrite_literal"), f("upgrade_configs"), f("cluster_not_found_response_code"),
	}},
	{message: "envoy.config.route.v3.RouteAction.UpgradeConfig", fields: []fieldRule{
		f("upgrade_type"), f("enabled"), f("connect_config"),
	}},
	{message: "envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig", fields: []fieldRule{f("allow_post"), f("proxy_protocol_config")}},
	{message: "envoy.config.core.v3.ProxyProtocolConfig", note: "PROXY protocol header written on terminated CONNECT tunnels; TLVs are not written.", fields: []fieldRule{
		enum("version", "V1", "V2"),
	}},
	{message: "envoy.config.route.v3.WeightedCluster", fields: []fieldRule{f("clusters"), f("total_weight")}},
	{message: "envoy.config.route.v3.WeightedCluster.ClusterWeight", fields: []fieldRule{f("name"), f("weight")}},
	{message: "envoy.config.route.v3.RedirectAction", fields: []fieldRule{
		f("scheme_redirect"), f("host_redirect"), f("port_redirect"), f("path_redirect"), f("https_redirect"),
		f("prefix_rewrite"), f("response_code"), f("strip_query"),
	}},
	{message: "envoy.config.route.v3.DirectResponseAction", fields: []fieldRule{f("status"), f("body")}},
	{message: "envoy.config.core.v3.DataSource", note: "A direct_response body must be inline; files and environment variables are for certificates and keys.", fields: []fieldRule{
		f("filename"), f("inline_bytes"), f("inline_string"), f("environment_variable"),
	}},
	{message: "envoy.config.core.v3.HeaderValueOption", fields: []fieldRule{
		f("header"), f("append_action"), f("keep_empty_value"), f("append"),
	}},
	{message: "envoy.config.core.v3.HeaderValue", fields: []fieldRule{f("key"), f("value")}},
	{message: "envoy.type.matcher.v3.StringMatcher", note: "custom is not supported.", fields: []fieldRule{
		f("exact"), f("prefix"), f("suffix"), f("safe_regex"), f("contains"), f("ignore_case"),
	}},
	{message: "envoy.type.matcher.v3.RegexMatcher", fields: []fieldRule{
		f("google_re2"), f("regex"),
	}},

	// Clusters.
	// pkg/upstream checks clusters again, with more precise messages
	// (for example for load_assignment.endpoints[].priority).
	{message: "envoy.config.cluster.v3.Cluster", note: "http2_protocol_options and protocol_selection are the deprecated forms of typed_extension_protocol_options, and cannot be combined with it.", fields: []fieldRule{
		f("name"), f("alt_stat_name"), enum("type", "STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS", "ORIGINAL_DST"), f("eds_cluster_config"),
		enum("lb_policy", "ROUND_ROBIN", "RANDOM", "CLUSTER_PROVIDED"), f("original_dst_lb_config"), f("connect_timeout"), f("load_assignment"),
		f("dns_refresh_rate"), f("dns_jitter"), f("dns_failure_refresh_rate"), f("dns_lookup_family"),
		f("respect_dns_ttl"), f("per_connection_buffer_limit_bytes"), f("common_http_protocol_options"),
		f("http_protocol_options"), f("typed_extension_protocol_options"), ign("circuit_breakers"),
		f("transport_socket"), f("max_requests_per_connection"), f("upstream_bind_config"),
		f("upstream_connection_options"), f("common_lb_config"), opq("metadata"),
		ign("wait_for_warm_on_init"), f("cleanup_interval"), f("protocol_selection"),
		ign("close_connections_on_host_health_failure"), ign("ignore_health_on_host_removal"),
		f("http2_protocol_options"),
	}},
	{message: "envoy.config.cluster.v3.Cluster.OriginalDstLbConfig", fields: []fieldRule{
		f("use_http_header"), f("http_header_name"), f("upstream_port_override"),
	}},
	{message: "envoy.config.cluster.v3.Cluster.EdsClusterConfig", fields: []fieldRule{f("eds_config"), f("service_name")}},
	{message: "envoy.config.cluster.v3.Cluster.RefreshRate", fields: []fieldRule{f("base_interval"), f("max_interval")}},
	{message: "envoy.config.cluster.v3.Cluster.CommonLbConfig", fields: []fieldRule{f("healthy_panic_threshold")}},
	{message: "envoy.type.v3.Percent", fields: []fieldRule{f("value")}},
	{message: "envoy.config.core.v3.BindConfig", fields: []fieldRule{f("source_address")}},
	{message: "envoy.config.cluster.v3.UpstreamConnectionOptions", fields: []fieldRule{f("tcp_keepalive")}},
	{message: "envoy.config.core.v3.TcpKeepalive", fields: []fieldRule{
		f("keepalive_probes"), f("keepalive_time"), f("keepalive_interval"),
	}},
	{message: "envoy.config.endpoint.v3.ClusterLoadAssignment", fields: []fieldRule{
		f("cluster_name"), f("endpoints"), ign("policy"),
	}},
	{message: "envoy.config.endpoint.v3.LocalityLbEndpoints", fields: []fieldRule{
		f("locality"), f("lb_endpoints"), f("load_balancing_weight"), f("priority"), opq("metadata"),
	}},
	{message: "envoy.config.endpoint.v3.LbEndpoint", fields: []fieldRule{
		f("endpoint"), f("load_balancing_weight"), f("health_status"), opq("metadata"),
	}},
	{message: "envoy.config.endpoint.v3.Endpoint", fields: []fieldRule{
		f("address"), f("hostname"), ign("health_check_config"),
	}},
	{message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions", fields: []fieldRule{
		f("common_http_protocol_options"), f("explicit_http_config"), f("use_downstream_protocol_config"),
		f("auto_config"),
	}},
	{message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig", fields: []fieldRule{
		f("http_protocol_options"), f("http2_protocol_options"),
	}},
	{message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig", fields: []fieldRule{
		f("http_protocol_options"), f("http2_protocol_options"),
	}},
	{message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.AutoHttpConfig", note: "HTTP/2 or HTTP/1.1 by ALPN; needs an UpstreamTlsContext.", fields: []fieldRule{
		f("http_protocol_options"), f("http2_protocol_options"),
	}},

	// TLS transport sockets: the allowlist of pkg/tlsconfig, which compiles
	// them (TestTLSAllowlistMatchesTLSConfig keeps the two in step).
	{message: "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", note: "Listener TLS (envoy.transport_sockets.tls).", fields: []fieldRule{
		f("common_tls_context"), f("require_client_certificate"), ign("session_timeout"),
		f("disable_stateless_session_resumption"),
	}},
	{message: "envoy.extensions.transport_sockets.quic.v3.QuicDownstreamTransport", note: "Listener QUIC (envoy.transport_sockets.quic); 0-RTT is not supported.", fields: []fieldRule{
		f("downstream_tls_context"), boolean("enable_early_data", false),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", note: "Cluster TLS. Renegotiation is not supported.", fields: []fieldRule{
		f("common_tls_context"), f("sni"), f("max_session_keys"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext", note: "Certificates and CAs are read once, when the configuration is loaded.", fields: []fieldRule{
		f("tls_params"), f("tls_certificates"), f("validation_context"), f("alpn_protocols"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.TlsParameters", note: "cipher_suites and ecdh_curves take the OpenSSL names Go implements.", fields: []fieldRule{
		f("tls_minimum_protocol_version"), f("tls_maximum_protocol_version"), f("cipher_suites"), f("ecdh_curves"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.TlsCertificate", fields: []fieldRule{
		f("certificate_chain"), f("private_key"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext", note: "As in Envoy, names are checked by the subject alt name matchers only, and without trusted_ca or system_root_certs the peer's certificate is not verified.", fields: []fieldRule{
		f("trusted_ca"), f("system_root_certs"), f("match_typed_subject_alt_names"), f("match_subject_alt_names"),
		f("allow_expired_certificate"), f("trust_chain_verification"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext.SystemRootCerts", note: "Empty: selects the system's CA certificates.", fields: []fieldRule{}},
	{message: "envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher", fields: []fieldRule{
		enum("san_type", "EMAIL", "DNS", "URI", "IP_ADDRESS"), f("matcher"),
	}},
}

// allowlist indexes supportedFields by the field's full name. Built once
// and never modified.
var allowlist = func() map[protoreflect.FullName]fieldRule {
	m := make(map[protoreflect.FullName]fieldRule)
	for _, mr := range supportedFields {
		for _, fr := range mr.fields {
			m[mr.message.Append(fr.name)] = fr
		}
	}
	return m
}()
