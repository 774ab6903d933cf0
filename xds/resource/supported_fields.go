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
}

// messageRules is the allowlist of one message.
type messageRules struct {
	message protoreflect.FullName
	note    string // one line for SUPPORTED.md; may be empty
	fields  []fieldRule
}

// f, opq, ign and enum build fieldRules tersely.
func f(name protoreflect.Name) fieldRule   { return fieldRule{name: name} }
func opq(name protoreflect.Name) fieldRule { return fieldRule{name: name, kind: opaque} }
func ign(name protoreflect.Name) fieldRule { return fieldRule{name: name, kind: ignored} }
func enum(name protoreflect.Name, values ...protoreflect.Name) fieldRule {
	return fieldRule{name: name, values: values}
}

// Shared field sets.
var (
	headerMutations = []fieldRule{
		f("request_headers_to_add"), f("request_headers_to_remove"),
		f("response_headers_to_add"), f("response_headers_to_remove"),
	}
	socketAddress = []fieldRule{f("address"), f("port_value"), enum("protocol", "TCP"), f("ipv4_compat")}
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
	{message: "envoy.config.core.v3.Address", fields: []fieldRule{f("socket_address")}},
	{message: "envoy.config.core.v3.SocketAddress", fields: socketAddress},
	{message: "envoy.config.core.v3.CidrRange", fields: []fieldRule{f("address_prefix"), f("prefix_len")}},
	{message: "envoy.config.core.v3.Metadata", fields: []fieldRule{opq("filter_metadata")}},
	{message: "envoy.config.core.v3.Locality", fields: []fieldRule{f("region"), f("zone"), f("sub_zone")}},
	{message: "envoy.config.core.v3.TransportSocket", fields: []fieldRule{f("name"), f("typed_config")}},

	// Listener.
	{message: "envoy.config.listener.v3.Listener", fields: []fieldRule{
		f("name"), f("address"), f("filter_chains"), f("default_filter_chain"), f("listener_filters"),
		f("stat_prefix"), ign("traffic_direction"), opq("metadata"),
	}},
	{message: "envoy.config.listener.v3.ListenerFilter", fields: []fieldRule{f("name"), f("typed_config")}},
	{message: "envoy.config.listener.v3.FilterChain", fields: []fieldRule{
		f("filter_chain_match"), f("filters"), f("name"), f("transport_socket"),
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

	// HTTP connection manager.
	{message: "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager", note: "access_log is not supported yet.", fields: []fieldRule{
		enum("codec_type", "AUTO", "HTTP1"), f("stat_prefix"), f("route_config"), f("http_filters"),
		f("upgrade_configs"), f("http_protocol_options"), f("common_http_protocol_options"),
		f("stream_idle_timeout"), f("request_timeout"), f("request_headers_timeout"),
		f("max_request_headers_kb"), f("use_remote_address"), f("skip_xff_append"),
		f("generate_request_id"), f("preserve_external_request_id"), f("always_set_request_id_in_response"),
		f("server_name"), f("server_header_transformation"), f("strip_any_host_port"),
		f("strip_matching_host_port"), f("via"), f("rds"),
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

	// HTTP filters.
	{message: "envoy.extensions.filters.http.router.v3.Router", fields: []fieldRule{
		f("suppress_envoy_headers"), ign("start_child_span"),
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
	{message: "envoy.config.route.v3.RouteAction.UpgradeConfig.ConnectConfig", fields: []fieldRule{f("allow_post")}},
	{message: "envoy.config.route.v3.WeightedCluster", fields: []fieldRule{f("clusters"), f("total_weight")}},
	{message: "envoy.config.route.v3.WeightedCluster.ClusterWeight", fields: []fieldRule{f("name"), f("weight")}},
	{message: "envoy.config.route.v3.RedirectAction", fields: []fieldRule{
		f("scheme_redirect"), f("host_redirect"), f("port_redirect"), f("path_redirect"), f("https_redirect"),
		f("prefix_rewrite"), f("response_code"), f("strip_query"),
	}},
	{message: "envoy.config.route.v3.DirectResponseAction", fields: []fieldRule{f("status"), f("body")}},
	{message: "envoy.config.core.v3.DataSource", fields: []fieldRule{f("inline_string"), f("inline_bytes"), f("filename")}},
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
	{message: "envoy.config.cluster.v3.Cluster", note: "HTTP/2 upstreams are not supported yet.", fields: []fieldRule{
		f("name"), f("alt_stat_name"), enum("type", "STATIC", "STRICT_DNS", "LOGICAL_DNS", "EDS"), f("eds_cluster_config"),
		enum("lb_policy", "ROUND_ROBIN", "RANDOM"), f("connect_timeout"), f("load_assignment"),
		f("dns_refresh_rate"), f("dns_jitter"), f("dns_failure_refresh_rate"), f("dns_lookup_family"),
		f("respect_dns_ttl"), f("per_connection_buffer_limit_bytes"), f("common_http_protocol_options"),
		f("http_protocol_options"), f("typed_extension_protocol_options"), ign("circuit_breakers"),
		f("transport_socket"), f("max_requests_per_connection"), f("upstream_bind_config"),
		f("upstream_connection_options"), f("common_lb_config"), opq("metadata"),
		ign("wait_for_warm_on_init"), ign("cleanup_interval"), ign("protocol_selection"),
		ign("close_connections_on_host_health_failure"), ign("ignore_health_on_host_removal"),
		f("http2_protocol_options"),
	}},
	{message: "envoy.config.core.v3.Http2ProtocolOptions", note: "HTTP/2 and TLS reach a cluster only as the transport of a gRPC config source (the xDS cluster) for now; pkg/upstream rejects them on data-plane clusters.", fields: []fieldRule{
		ign("max_concurrent_streams"), ign("initial_stream_window_size"), ign("initial_connection_window_size"),
		ign("connection_keepalive"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", fields: []fieldRule{
		f("common_tls_context"), f("sni"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.CommonTlsContext", fields: []fieldRule{
		f("tls_certificates"), f("validation_context"), f("alpn_protocols"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.TlsCertificate", fields: []fieldRule{
		f("certificate_chain"), f("private_key"),
	}},
	{message: "envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext", fields: []fieldRule{
		f("trusted_ca"),
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
	}},
	{message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig", fields: []fieldRule{
		f("http_protocol_options"), f("http2_protocol_options"),
	}},
	{message: "envoy.extensions.upstreams.http.v3.HttpProtocolOptions.UseDownstreamHttpConfig", fields: []fieldRule{
		f("http_protocol_options"),
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
