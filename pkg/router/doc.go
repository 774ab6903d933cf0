// Package router compiles an Envoy envoy.config.route.v3.RouteConfiguration
// into an immutable match table that the HTTP connection manager consults
// for every request.
//
// Compile validates the proto (protoc-gen-validate's ValidateAll), rejects
// every populated field this package does not implement, and builds a Table.
// A Table and everything reachable from it is read-only after Compile
// returns: any number of goroutines may call Match and the Route methods
// concurrently without locks, and a config push replaces the whole Table.
// The package does no I/O and starts no goroutines.
//
// # Virtual host selection
//
// Table.Match follows Envoy's RouteMatcher::findVirtualHost: the
// authority is lower-cased (ASCII) and looked up among exact domains, then
// suffix wildcards ("*.example.com", "*-bar.example.com"; longest first; the
// wildcard must cover at least one character), then prefix wildcards
// ("example.*"; longest first), then the "*" default. Without
// ignore_port_in_host_matching the whole "host:port" is compared, so
// "example.com" does not match "example.com:8080"; with it, the port is
// removed first using Envoy's rule (the last ':' that is not inside an
// IPv6 literal, so "[::1]:80" becomes "[::1]"). A request without an
// authority gets no virtual host, unless "*" is the table's only domain.
//
// # Route matching
//
// Routes are tried in order and the first match wins. Path matchers
// (prefix, path, safe_regex, path_separated_prefix) see the path without
// its query string and fragment; a request without a path (an HTTP/1.1
// CONNECT) matches only connect_matcher routes. connect_matcher matches only
// requests with Request.IsConnect set. Header matchers read ":method",
// ":authority", ":path" and ":scheme" from the Request fields and every
// other name from Request.Header; several values of one header are joined
// with "," as Envoy does. Regular expressions use Go's regexp (RE2 syntax)
// and must match the whole string.
//
// # Supported fields
//
// Anything else that is set makes Compile fail with
// "router: <field path>: unsupported field".
//
//	RouteConfiguration: name, virtual_hosts, request_headers_to_add,
//	  request_headers_to_remove, response_headers_to_add,
//	  response_headers_to_remove, most_specific_header_mutations_wins,
//	  ignore_port_in_host_matching, max_direct_response_body_size_bytes,
//	  validate_clusters (accepted and ignored: cluster existence is checked
//	  elsewhere)
//	VirtualHost: name, domains, routes, request/response_headers_to_add,
//	  request/response_headers_to_remove, typed_per_filter_config (stored)
//	Route: name, match, route, redirect, direct_response,
//	  request/response_headers_to_add, request/response_headers_to_remove,
//	  typed_per_filter_config (stored)
//	RouteMatch: prefix, path, safe_regex, path_separated_prefix,
//	  connect_matcher, case_sensitive, headers, query_parameters
//	HeaderMatcher: name, exact_match, safe_regex_match, range_match,
//	  present_match, prefix_match, suffix_match, contains_match,
//	  string_match, invert_match, treat_missing_header_as_empty
//	QueryParameterMatcher: name, string_match, present_match
//	StringMatcher: exact, prefix, suffix, contains, safe_regex, ignore_case
//	RegexMatcher: regex, google_re2 (ignored)
//	RouteAction: cluster, weighted_clusters (clusters[].name,
//	  clusters[].weight, total_weight ignored as in Envoy),
//	  cluster_not_found_response_code, timeout, idle_timeout,
//	  prefix_rewrite, host_rewrite_literal, upgrade_configs (upgrade_type,
//	  enabled, connect_config passed through untouched)
//	RedirectAction: https_redirect, scheme_redirect, host_redirect,
//	  port_redirect, path_redirect, prefix_rewrite, response_code,
//	  strip_query
//	DirectResponseAction: status, body (inline_string or inline_bytes;
//	  filename is rejected because reading it would be I/O)
//	HeaderValueOption: header (key, value), append, append_action,
//	  keep_empty_value
//
// # Header mutations
//
// Route.MutateRequestHeaders and Route.MutateResponseHeaders apply the
// route's, the virtual host's and the route configuration's mutations in
// Envoy's order (route, virtual host, configuration, so the configuration
// wins; most_specific_header_mutations_wins reverses it). Within one level
// Envoy's order is kept too: removals first, then every value is formatted
// against the headers as they stand, then overwrites, then appends. Header
// values may use %%, %DOWNSTREAM_REMOTE_ADDRESS%,
// %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, %DOWNSTREAM_LOCAL_ADDRESS%,
// %DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT%, %DOWNSTREAM_LOCAL_PORT%,
// %PROTOCOL% and %REQ(name?alternative):max_length%; they are parsed once
// by Compile. A value that formats to "" is not added unless
// keep_empty_value is set.
package router
