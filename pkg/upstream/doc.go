// Package upstream turns Envoy clusters (envoy.config.cluster.v3.Cluster)
// into live clusters: endpoints (static, resolved through DNS, or set from
// EDS ClusterLoadAssignments), load balancing, HTTP/1.1 and HTTP/2
// connection pools (plaintext or TLS), and dials for upgrades and tunnels.
//
// # Place in the data flow
//
// snapshot compiles each cluster once through Manager.Add (or only checks it
// with Compile for `hop --mode validate`). For every cluster of type EDS the
// xDS data plane then calls Manager.SetEndpoints with the
// ClusterLoadAssignment it received (CompileEndpoints checks one before it
// is acknowledged). The router filter sends ordinary requests, and
// upgrades as RFC 8441 extended CONNECT streams, with Cluster.RoundTrip
// (Cluster.UpgradeProtocol says whether to try that first); tunnel and
// tcpproxy open byte streams with Cluster.Dial and splice the returned
// *net.TCPConn (Conn.TCP; nil under TLS and for internal listeners).
// ORIGINAL_DST clusters read the destination from the context
// (WithLBContext). admin lists clusters and hosts
// through Manager.Clusters and Cluster.Hosts. Besides the standard library
// and go-control-plane, the package uses golang.org/x/net/http2 (the
// HTTP/2 client), pkg/tlsconfig (UpstreamTlsContext), pkg/h2wire (HTTP/2
// codec stats) and pkg/stats.
//
// # Protocols
//
// A request goes out as HTTP/1.1 or HTTP/2 as Envoy's
// upstreamHttpProtocol decides: explicit HTTP/1.1 (the default) or
// HTTP/2; use_downstream_protocol_config (or the deprecated
// protocol_selection USE_DOWNSTREAM_PROTOCOL): HTTP/2 when the request's
// ProtoMajor is 2 or 3, HTTP/1.1 otherwise; auto_config: over TLS, every
// new connection offers ALPN "h2" and "http/1.1" and the negotiated
// protocol decides what it carries (no ALPN answer is HTTP/1.1). As in
// Envoy, auto_config without TLS is a configuration error ("ALPN configured
// for cluster ... which has a non-ALPN transport socket").
//
// HTTP/2 without TLS is h2c with prior knowledge; with TLS it offers ALPN
// "h2" unless the UpstreamTlsContext lists alpn_protocols (Envoy's
// fallback rule; an HTTP/1.1 pool offers "http/1.1" likewise), and speaks
// HTTP/2 whatever was negotiated. Per host, HTTP/2 requests are streams on
// shared connections (golang.org/x/net/http2's ClientConn): a request takes
// the oldest connection with room (below max_concurrent_streams and the
// server's SETTINGS_MAX_CONCURRENT_STREAMS), else waits for a connection
// being established that has room, else starts one. An extended CONNECT
// (RoundTrip with method CONNECT and a ":protocol" header) always goes out
// over HTTP/2; when the cluster speaks HTTP/1.1 for it, auto_config's ALPN
// chose HTTP/1.1, or the server did not send
// SETTINGS_ENABLE_CONNECT_PROTOCOL=1, RoundTrip fails with an error
// matching ErrExtendedConnectUnsupported and nothing is sent. (x/net waits
// for the server's first SETTINGS before it sends an extended CONNECT;
// Envoy as a client does not, which is why hop can fall back.)
//
// With an UpstreamTlsContext every connection is TLS, the handshake is part
// of connecting (connect_timeout covers it; a failed handshake is a connect
// failure, reset reason "remote connection failure" with BoringSSL-style
// transport failure reasons such as
// "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end").
// SNI and validation are pkg/tlsconfig's: sni as configured, the chain
// checked against trusted_ca, names only by SAN matchers. Dial offers ALPN
// "http/1.1" only, also for tcp_proxy tunnels (Envoy offers the context's
// alpn_protocols there).
//
// # Lifetime
//
// A Manager owns every Cluster. Adding a cluster whose proto is equal to the
// one already registered under its name returns the existing Cluster, so its
// pool, DNS state and EDS endpoints survive config pushes that do not change
// it. Adding a changed cluster compiles the new one first (on error nothing
// changes), then registers it and retires the old one: its DNS goroutines
// stop and its idle pooled connections are closed (an HTTP/2 connection
// with streams takes no new one and closes after its last), but requests
// and HTTP/2 streams in flight and connections from Dial keep running — a
// config push never cuts an established tunnel. A replaced Cluster still serves callers that hold it,
// with its last host set. Removing a cluster (Manager.Remove, Manager.Close) does the same and
// also makes its new connection attempts fail. Stats are keyed by the
// cluster's stat name, so counters carry over between versions.
//
// A new EDS cluster, including one that replaces a changed EDS cluster,
// starts without endpoints and is not ready (RoundTrip and Dial wait) until
// its first Manager.SetEndpoints, so the caller sets the endpoints right
// after Add; SetEndpoints(name, nil), for an initial_fetch_timeout without
// an assignment, makes it ready with no hosts. Each SetEndpoints is applied
// in place, as a new DNS answer is: a host whose address stays keeps its
// object, connection pool and counters and takes its new weight, health
// status, locality and hostname; a host that leaves has its idle pooled
// connections closed; requests in flight and Dial'ed connections continue.
//
// # Supported Cluster fields
//
// Only the fields below may be set; any other populated field is rejected with
// its path and "unsupported field" (ErrUnsupported), rather than being
// silently ignored.
//
//   - name; alt_stat_name (the stat scope, as in Envoy); metadata (kept, unused).
//   - type: STATIC (IP literals only, "malformed IP address" otherwise),
//     STRICT_DNS (every address of every hostname is a host, re-resolved
//     every dns_refresh_rate), LOGICAL_DNS (exactly one lb_endpoint; new
//     connections go to the first address of the latest answer), EDS
//     (endpoints from Manager.SetEndpoints) and ORIGINAL_DST (see below).
//     Custom cluster_type is not supported.
//   - eds_cluster_config (required for EDS, as in Envoy; ignored by other
//     types): eds_config is accepted whatever it holds (the xDS layer
//     subscribes with it); service_name, or the cluster's name when empty,
//     is the EDS resource name (Cluster.EDSServiceName).
//   - load_assignment (ignored for EDS, as in Envoy, apart from the field
//     checks below): cluster_name; endpoints[].locality (reported, not used
//     for balancing), load_balancing_weight (ignored without locality
//     weighted balancing, as in Envoy), priority (must be 0),
//     metadata; lb_endpoints[].endpoint.address.socket_address (TCP,
//     address, port_value, ipv4_compat) or .envoy_internal_address
//     (server_listener_name, endpoint_id; STATIC and EDS clusters: see
//     Internal listeners below), endpoint.hostname,
//     endpoint.health_check_config (accepted; there are no active health
//     checks), health_status, load_balancing_weight, metadata;
//     policy.overprovisioning_factor and policy.weighted_priority_health
//     (accepted; there is a single priority). The same fields, and only
//     those, are accepted in a ClusterLoadAssignment from EDS, where every
//     socket address must be an IP literal, as Envoy's EDS requires resolved
//     addresses; there cluster_name must be the EDS service name, and a
//     repeated address keeps its first lb_endpoint, as in Envoy.
//     policy.drop_overloads, policy.endpoint_stale_after, named_endpoints,
//     LEDS and endpoint_name are rejected as unsupported.
//   - lb_policy: ROUND_ROBIN (default; smooth weighted round robin when
//     weights differ), RANDOM (weighted) and CLUSTER_PROVIDED (required by,
//     and only valid for, ORIGINAL_DST, with Envoy's messages). Others are
//     unsupported.
//   - original_dst_lb_config: use_http_header, http_header_name,
//     upstream_port_override (ORIGINAL_DST; ignored by other types).
//     metadata_key is unsupported.
//   - common_lb_config.healthy_panic_threshold (default 50%, 0 disables):
//     below it, as in Envoy, hosts are chosen regardless of health.
//   - connect_timeout (default 5s); per_connection_buffer_limit_bytes
//     (accepted, not applied); max_requests_per_connection.
//   - circuit_breakers: accepted but NOT enforced.
//   - common_http_protocol_options: idle_timeout (default 1h, 0 disables;
//     HTTP/2 connections too), max_requests_per_connection (HTTP/2: streams
//     per connection, after which it closes when its last stream ends),
//     max_response_headers_kb (default 60).
//   - http_protocol_options (HTTP/1.1): enable_trailers, allow_chunked_length,
//     accept_http_10, override_stream_error_on_invalid_http_message (all
//     accepted; net/http already behaves that way or they are server-side).
//   - http2_protocol_options (deprecated; explicit HTTP/2, or with
//     protocol_selection USE_DOWNSTREAM_PROTOCOL the options for HTTP/2
//     requests; with http_protocol_options too only under
//     USE_DOWNSTREAM_PROTOCOL, as in Envoy) and, everywhere HTTP/2 options
//     appear, these Http2ProtocolOptions: max_concurrent_streams (streams
//     per connection; another connection opens beyond it);
//     initial_stream_window_size (x/net's receive window per stream);
//     initial_connection_window_size (approximated: x/net opens the
//     connection window to at least 65535 + 65535, so values below 131070
//     give 131070); hpack_table_size (SETTINGS_HEADER_TABLE_SIZE and the
//     encoder's limit; 0 is approximated by 1, which holds no entry);
//     connection_keepalive interval and timeout (x/net's ReadIdleTimeout and
//     PingTimeout: a PING after interval without any frame received, where
//     Envoy pings every interval; interval_jitter is accepted and not
//     applied); allow_connect (accepted: an extended CONNECT is sent
//     whenever the server allows it). Unset sizes keep x/net's defaults
//     (4 MiB per stream, 1 GiB per connection), not Envoy's 256 MiB. Any
//     other Http2ProtocolOptions field is unsupported.
//   - protocol_selection (USE_DOWNSTREAM_PROTOCOL as above).
//   - typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]:
//     common_http_protocol_options as above; explicit_http_config,
//     use_downstream_protocol_config and auto_config with
//     http_protocol_options and http2_protocol_options as above
//     (http3_protocol_options: "HTTP/3 upstreams are not supported";
//     auto_config's alternate_protocols_cache_options is unsupported).
//     Envoy ignores the deprecated http2_protocol_options and
//     protocol_selection when these are present; hop refuses the pair.
//   - transport_socket: envoy.transport_sockets.raw_buffer, or
//     envoy.transport_sockets.tls with an UpstreamTlsContext (the fields
//     pkg/tlsconfig supports; its errors are prefixed "transport_socket.").
//   - dns_lookup_family (AUTO prefers IPv6 then IPv4, V4_PREFERRED the
//     reverse, V4_ONLY, V6_ONLY, ALL), dns_refresh_rate (default 5s),
//     dns_jitter, dns_failure_refresh_rate (exponential backoff from
//     base_interval up to max_interval, default 10×base), respect_dns_ttl
//     (accepted; net.Resolver does not expose TTLs, so dns_refresh_rate
//     applies). When a lookup fails the last good addresses are kept; an
//     authoritative "no such host" is an empty answer, as Envoy treats
//     NXDOMAIN/NODATA. Hosts that leave an answer have their idle pooled
//     connections closed. Until every hostname has had its first answer,
//     RoundTrip and Dial wait (Cluster.Ready), in place of Envoy's warming.
//   - upstream_connection_options.tcp_keepalive; upstream_bind_config
//     source_address (address and port_value only).
//   - cleanup_interval (ORIGINAL_DST, default 5s; accepted elsewhere).
//   - wait_for_warm_on_init, close_connections_on_host_health_failure,
//     ignore_health_on_host_removal: accepted; they have no effect without
//     health checks or warming by the xDS layer.
//
// The deprecated v2 field `hosts` does not exist in the v3 message and is
// rejected by the decoder before it gets here.
//
// # ORIGINAL_DST clusters
//
// As Envoy's original_dst cluster, the cluster has no endpoints
// (load_assignment is an error) and creates a host per destination on
// first use. Callers hand the per-request data to Dial and RoundTrip in
// the context: WithLBContext(ctx, LBContext{Header, DownstreamLocalAddr})
// (Cluster.UsesLBContext says whether a cluster reads it). The
// destination is the value of the header named by http_header_name
// (default x-envoy-original-dst-host; ":authority" is the request's
// authority) when use_http_header is set, else — or when the header is
// absent or invalid — the downstream connection's original destination
// (LBContext.DownstreamLocalAddr, which Envoy takes only from an
// original_dst listener filter; hop has none, so callers leave it zero
// for now); upstream_port_override then replaces
// its port. Only the first header value counts and it must be an IP
// address and port ("10.0.0.1:80", "[::1]:80"): a name is never resolved,
// and an invalid value counts original_dst_host_invalid. Without a
// destination there is no host: upstream_cx_none_healthy and
// ErrNoHealthyUpstream (the router's 503 "no healthy upstream"). Hosts
// appear in Hosts and the membership stats, named "<cluster><ip:port>"
// as Envoy names them. Every cleanup_interval a host that was not chosen
// since the previous round and has no connection (pooled ones included:
// idle_timeout closes those) and no request leaves the cluster, as with
// Envoy's default original_dst_rely_on_idle_timeout.
//
// # Internal listeners
//
// An endpoint with an envoy_internal_address is an internal listener of
// this process (Envoy's envoy.bootstrap.internal_listener): its host's
// address is "envoy://<server_listener_name>/<endpoint_id>", and its
// connections, for Dial and for both pools, come from
// Options.InternalDial, which pkg/dataplane wires to the listener
// manager. They are counted like TCP connections; Conn.TCP is nil (no
// splice), CloseWrite and CloseRead work as on TCP, and a transport
// socket (TLS) runs over them as over TCP. When no internal listener of
// that name is active the connect fails as in Envoy: reset reason "remote
// connection failure", transport failure reason "immediate connect error:
// Invalid argument|remote address:envoy://<name>/<endpoint_id>" (503).
//
// # Stats
//
// Under cluster.<alt_stat_name or name>. (Prometheus tag envoy_cluster_name):
// upstream_cx_total, upstream_cx_active, upstream_cx_connect_fail,
// upstream_cx_connect_timeout, upstream_cx_destroy, upstream_cx_none_healthy,
// upstream_cx_rx_bytes_total and upstream_cx_tx_bytes_total (pooled
// connections, HTTP/2 ones included, the plaintext under TLS; Dial'ed
// connections through Conn.CountBytes), upstream_rq_total and
// upstream_rq_active (an HTTP/2 stream is a request; upstream_cx_active
// counts connections), upstream_rq_timeout (counted by
// the caller through Cluster.CountTimeout), membership_total,
// membership_healthy, membership_change (a DNS answer or EDS update that
// added or removed hosts; a change of weights or health alone is not
// counted, as in Envoy), lb_healthy_panic, upstream_cx_http1_total and
// upstream_cx_http2_total (connections by the protocol they carry; under
// auto_config, by what ALPN chose), original_dst_host_invalid (ORIGINAL_DST
// clusters only; Envoy has it on every cluster). For TLS clusters: ssl.handshake,
// ssl.connection_error and ssl.fail_verify_error. For clusters that may
// speak HTTP/2, codec stats counted from the frames by pkg/h2wire:
// http2.rx_reset, http2.tx_reset, http2.goaway_sent,
// http2.stream_refused_errors, and http2.keepalive_timeout (a
// connection_keepalive PING unanswered). A connection
// counts in upstream_cx_total and upstream_cx_active from the moment its
// connect starts, as in Envoy, so a failed connect also counts once in
// upstream_cx_destroy. RoundTrip counts requests itself; a Dial'ed
// connection counts as a request only when the caller calls
// Conn.CountRequest (upgrades do, plain TCP proxying does not, as in Envoy).
package upstream
