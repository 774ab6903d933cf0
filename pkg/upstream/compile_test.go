package upstream

import (
	"errors"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	rawbufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/raw_buffer/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// base is a valid STATIC cluster "c" with two endpoints; mutate a clone.
func base() *clusterv3.Cluster {
	return cluster("c", clusterv3.Cluster_STATIC, lbEndpoint("127.0.0.1", 8080), lbEndpoint("127.0.0.2", 8080))
}

func with(f func(c *clusterv3.Cluster)) *clusterv3.Cluster {
	c := base()
	f(c)
	return c
}

func mustAny(t *testing.T, m proto.Message) *anypb.Any {
	t.Helper()
	a, err := anypb.New(m)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func httpOptions(t *testing.T, o *httpv3.HttpProtocolOptions) map[string]*anypb.Any {
	return map[string]*anypb.Any{httpOptionsName: mustAny(t, o)}
}

func explicitHTTP1() *httpv3.HttpProtocolOptions {
	return &httpv3.HttpProtocolOptions{UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
		ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{
				HttpProtocolOptions: &corev3.Http1ProtocolOptions{EnableTrailers: true},
			},
		},
	}}
}

func TestCompileErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster *clusterv3.Cluster
		want    string // the whole error text
		isUnsup bool
	}{
		{
			name: "static hostname",
			cluster: with(func(c *clusterv3.Cluster) {
				c.LoadAssignment.Endpoints[0].LbEndpoints[1] = lbEndpoint("example.com", 80)
			}),
			want: `upstream: cluster "c": load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address: malformed IP address: example.com`,
		},
		{
			name:    "unsupported top-level field",
			cluster: with(func(c *clusterv3.Cluster) { c.OutlierDetection = &clusterv3.OutlierDetection{} }),
			want:    `upstream: cluster "c": outlier_detection: unsupported field`,
			isUnsup: true,
		},
		{
			name: "unsupported nested field",
			cluster: with(func(c *clusterv3.Cluster) {
				c.LoadAssignment.Endpoints[0].LbEndpoints[1].GetEndpoint().Address = &corev3.Address{
					Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/sock"}},
				}
			}),
			want:    `upstream: cluster "c": load_assignment.endpoints[0].lb_endpoints[1].endpoint.address.pipe: unsupported field`,
			isUnsup: true,
		},
		{
			name: "unsupported common http option",
			cluster: with(func(c *clusterv3.Cluster) {
				c.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxHeadersCount: wrapperspb.UInt32(10)}
			}),
			want:    `upstream: cluster "c": common_http_protocol_options.max_headers_count: unsupported field`,
			isUnsup: true,
		},
		{
			name: "repeated field",
			cluster: with(func(c *clusterv3.Cluster) {
				c.Filters = []*clusterv3.Filter{{Name: "f", TypedConfig: mustAny(t, &rawbufferv3.RawBuffer{})}}
			}),
			want:    `upstream: cluster "c": filters: unsupported field`,
			isUnsup: true,
		},
		{
			name:    "least request",
			cluster: with(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST }),
			want:    `upstream: cluster "c": lb_policy: LEAST_REQUEST: unsupported field`,
			isUnsup: true,
		},
		{
			name:    "maglev",
			cluster: with(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_MAGLEV }),
			want:    `upstream: cluster "c": lb_policy: MAGLEV: unsupported field`,
			isUnsup: true,
		},
		{
			name: "original dst round robin",
			cluster: with(func(c *clusterv3.Cluster) {
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
				c.LoadAssignment = nil
			}),
			want: `upstream: cluster "c": lb_policy: cluster: LB policy ROUND_ROBIN is not valid for Cluster type ORIGINAL_DST. Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'`,
		},
		{
			name: "original dst with load assignment",
			cluster: with(func(c *clusterv3.Cluster) {
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
				c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
			}),
			want: `upstream: cluster "c": load_assignment: ORIGINAL_DST clusters must have no load assignment configured`,
		},
		{
			name: "original dst header name without use_http_header",
			cluster: with(func(c *clusterv3.Cluster) {
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
				c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
				c.LoadAssignment = nil
				c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{HttpHeaderName: "x-dst"}}
			}),
			want: `upstream: cluster "c": original_dst_lb_config.http_header_name: ORIGINAL_DST cluster: invalid config http_header_name=x-dst and use_http_header is false. Set use_http_header to true if http_header_name is desired.`,
		},
		{
			name: "original dst metadata key",
			cluster: with(func(c *clusterv3.Cluster) {
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_ORIGINAL_DST}
				c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED
				c.LoadAssignment = nil
				c.LbConfig = &clusterv3.Cluster_OriginalDstLbConfig_{OriginalDstLbConfig: &clusterv3.Cluster_OriginalDstLbConfig{
					MetadataKey: &metadatav3.MetadataKey{Key: "k", Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: "p"}}}},
				}}
			}),
			want:    `upstream: cluster "c": original_dst_lb_config.metadata_key: unsupported field`,
			isUnsup: true,
		},
		{
			name:    "cluster provided on a static cluster",
			cluster: with(func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED }),
			want:    `upstream: cluster "c": lb_policy: cluster manager: cluster provided LB specified but cluster 'c' did not provide one. Check cluster documentation.`,
		},
		{
			name: "internal address on a DNS cluster",
			cluster: with(func(c *clusterv3.Cluster) {
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
				c.LoadAssignment.Endpoints[0].LbEndpoints[0] = internalEndpoint("inner", "")
			}),
			want:    `upstream: cluster "c": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.envoy_internal_address: unsupported field: DNS clusters resolve socket addresses only`,
			isUnsup: true,
		},
		{
			name: "deprecated http1 and http2 options",
			cluster: with(func(c *clusterv3.Cluster) {
				c.HttpProtocolOptions = &corev3.Http1ProtocolOptions{}
				c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
			}),
			want: `upstream: cluster "c": Both HTTP1 and HTTP2 options may only be configured with non-default 'protocol_selection' values`,
		},
		{
			name: "typed and deprecated http2 options",
			cluster: with(func(c *clusterv3.Cluster) {
				c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{}
				c.TypedExtensionProtocolOptions = httpOptions(t, explicitHTTP1())
			}),
			want: `upstream: cluster "c": http2_protocol_options: cannot be set together with typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`,
		},
		{
			name: "typed options and protocol_selection",
			cluster: with(func(c *clusterv3.Cluster) {
				c.ProtocolSelection = clusterv3.Cluster_USE_DOWNSTREAM_PROTOCOL
				c.TypedExtensionProtocolOptions = httpOptions(t, explicitHTTP1())
			}),
			want: `upstream: cluster "c": protocol_selection: cannot be set together with typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]`,
		},
		{
			name: "explicit http3",
			cluster: with(func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = httpOptions(t, &httpv3.HttpProtocolOptions{
					UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{
						ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
							ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http3ProtocolOptions{
								Http3ProtocolOptions: &corev3.Http3ProtocolOptions{},
							},
						},
					},
				})
			}),
			want: `upstream: cluster "c": typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http3_protocol_options: HTTP/3 upstreams are not supported`,
		},
		{
			name: "unsupported http2 field",
			cluster: with(func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = explicitH2(t, &corev3.Http2ProtocolOptions{MaxOutboundFrames: wrapperspb.UInt32(10)})
			}),
			want:    `upstream: cluster "c": typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http2_protocol_options.max_outbound_frames: unsupported field`,
			isUnsup: true,
		},
		{
			name: "unsupported keepalive field",
			cluster: with(func(c *clusterv3.Cluster) {
				c.Http2ProtocolOptions = &corev3.Http2ProtocolOptions{ConnectionKeepalive: &corev3.KeepaliveSettings{
					Timeout: dur(time.Second), ConnectionIdleInterval: dur(time.Minute),
				}}
			}),
			want:    `upstream: cluster "c": http2_protocol_options.connection_keepalive.connection_idle_interval: unsupported field`,
			isUnsup: true,
		},
		{
			name: "auto config alternate protocols cache",
			cluster: with(func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = httpOptions(t, &httpv3.HttpProtocolOptions{
					UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_AutoConfig{AutoConfig: &httpv3.HttpProtocolOptions_AutoHttpConfig{
						AlternateProtocolsCacheOptions: &corev3.AlternateProtocolsCacheOptions{Name: "cache"},
					}},
				})
			}),
			want:    `upstream: cluster "c": typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].auto_config.alternate_protocols_cache_options: unsupported field`,
			isUnsup: true,
		},
		{
			name: "unsupported tls field",
			cluster: with(func(c *clusterv3.Cluster) {
				c.TransportSocket = &corev3.TransportSocket{
					Name:       "envoy.transport_sockets.tls",
					ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.UpstreamTlsContext{EnforceRsaKeyUsage: wrapperspb.Bool(true)})},
				}
			}),
			want:    `upstream: cluster "c": transport_socket.typed_config.enforce_rsa_key_usage: unsupported field`,
			isUnsup: true,
		},
		{
			name: "downstream tls context",
			cluster: with(func(c *clusterv3.Cluster) {
				c.TransportSocket = &corev3.TransportSocket{
					Name:       "envoy.transport_sockets.tls",
					ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &tlsv3.DownstreamTlsContext{})},
				}
			}),
			want:    `upstream: cluster "c": transport_socket.typed_config: unsupported field: transport socket "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"`,
			isUnsup: true,
		},
		{
			name: "unknown protocol options key",
			cluster: with(func(c *clusterv3.Cluster) {
				c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.filters.network.tcp_proxy": mustAny(t, explicitHTTP1())}
			}),
			want:    `upstream: cluster "c": typed_extension_protocol_options["envoy.filters.network.tcp_proxy"]: unsupported field`,
			isUnsup: true,
		},
		{
			name: "logical dns with two endpoints",
			cluster: with(func(c *clusterv3.Cluster) {
				c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_LOGICAL_DNS}
			}),
			want: `upstream: cluster "c": LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint`,
		},
		{
			name:    "logical dns without endpoints",
			cluster: cluster("c", clusterv3.Cluster_LOGICAL_DNS),
			want:    `upstream: cluster "c": LOGICAL_DNS clusters must have a single host`,
		},
		{
			name:    "priority",
			cluster: with(func(c *clusterv3.Cluster) { c.LoadAssignment.Endpoints[0].Priority = 1 }),
			want:    `upstream: cluster "c": load_assignment.endpoints[0].priority: unsupported field: only priority 0 is supported`,
			isUnsup: true,
		},
		{
			name: "udp endpoint",
			cluster: with(func(c *clusterv3.Cluster) {
				c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().Protocol = corev3.SocketAddress_UDP
			}),
			want:    `upstream: cluster "c": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.protocol: unsupported field: UDP`,
			isUnsup: true,
		},
		{
			name:    "port zero",
			cluster: with(func(c *clusterv3.Cluster) { c.LoadAssignment.Endpoints[0].LbEndpoints[0] = lbEndpoint("127.0.0.1", 0) }),
			want:    `upstream: cluster "c": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value: must be between 1 and 65535, got 0`,
		},
		{
			name: "max requests twice",
			cluster: with(func(c *clusterv3.Cluster) {
				c.MaxRequestsPerConnection = wrapperspb.UInt32(3)
				c.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxRequestsPerConnection: wrapperspb.UInt32(4)}
			}),
			want: `upstream: cluster "c": common_http_protocol_options.max_requests_per_connection: only one of max_requests_per_connection from Cluster or HttpProtocolOptions can be specified`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Compile(tc.cluster)
			if err == nil {
				t.Fatalf("Compile succeeded, want %q", tc.want)
			}
			if err.Error() != tc.want {
				t.Errorf("Compile error:\n got %s\nwant %s", err, tc.want)
			}
			if got := errors.Is(err, ErrUnsupported); got != tc.isUnsup {
				t.Errorf("errors.Is(err, ErrUnsupported) = %v, want %v", got, tc.isUnsup)
			}
		})
	}
}

func TestCompileValidationErrors(t *testing.T) {
	if err := Compile(nil); err == nil {
		t.Error("Compile(nil) succeeded")
	}
	c := base()
	c.ConnectTimeout = dur(-time.Second)
	err := Compile(c)
	if err == nil || !strings.HasPrefix(err.Error(), `upstream: cluster "c": `) || !strings.Contains(err.Error(), "ConnectTimeout") {
		t.Errorf("Compile with a negative connect_timeout = %v, want a validation error naming ConnectTimeout", err)
	}
}

func TestCompileSettings(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cluster *clusterv3.Cluster
		check   func(t *testing.T, s *settings)
	}{
		{"defaults", base(), func(t *testing.T, s *settings) {
			if s.connectTimeout != 5*time.Second || s.idleTimeout != time.Hour || s.dnsRefresh != 5*time.Second ||
				s.maxResponseHeaders != 60<<10 || s.panicThreshold != 50 || s.maxRequestsPerConn != 0 ||
				s.kind != kindStatic || s.lb != lbRoundRobin || s.statName != "c" || s.keepAlive.Enable {
				t.Errorf("defaults = %+v", s)
			}
			if len(s.endpoints) != 2 || s.endpoints[1].ip.String() != "127.0.0.2" || s.endpoints[1].weight != 1 {
				t.Errorf("endpoints = %+v", s.endpoints)
			}
		}},
		{"everything accepted", with(func(c *clusterv3.Cluster) {
			c.AltStatName = "alt"
			c.ConnectTimeout = dur(time.Second)
			c.PerConnectionBufferLimitBytes = wrapperspb.UInt32(32768)
			c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{MaxConnections: wrapperspb.UInt32(5)}}}
			opts := explicitHTTP1()
			opts.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{
				IdleTimeout: dur(time.Minute), MaxRequestsPerConnection: wrapperspb.UInt32(7), MaxResponseHeadersKb: wrapperspb.UInt32(8),
			}
			c.TypedExtensionProtocolOptions = httpOptions(t, opts)
			c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.raw_buffer",
				ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(t, &rawbufferv3.RawBuffer{})}}
			c.CommonLbConfig = &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
			c.UpstreamConnectionOptions = &clusterv3.UpstreamConnectionOptions{TcpKeepalive: &corev3.TcpKeepalive{
				KeepaliveTime: wrapperspb.UInt32(30), KeepaliveProbes: wrapperspb.UInt32(3),
			}}
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(4)
			c.LoadAssignment.Endpoints[0].LbEndpoints[0].HealthStatus = corev3.HealthStatus_DEGRADED
			c.LoadAssignment.Endpoints[0].Locality = &corev3.Locality{Zone: "z"}
			c.LoadAssignment.Policy = &endpointv3.ClusterLoadAssignment_Policy{OverprovisioningFactor: wrapperspb.UInt32(140)}
			c.Metadata = &corev3.Metadata{}
		}), func(t *testing.T, s *settings) {
			if s.statName != "alt" || s.connectTimeout != time.Second || s.idleTimeout != time.Minute ||
				s.maxRequestsPerConn != 7 || s.maxResponseHeaders != 8<<10 || s.panicThreshold != 0 {
				t.Errorf("settings = %+v", s)
			}
			if ka := s.keepAlive; !ka.Enable || ka.Idle != 30*time.Second || ka.Interval != -1 || ka.Count != 3 {
				t.Errorf("keepAlive = %+v", ka)
			}
			if ep := s.endpoints[0]; ep.weight != 4 || ep.health != corev3.HealthStatus_DEGRADED || ep.locality.GetZone() != "z" {
				t.Errorf("endpoint = %+v", ep)
			}
		}},
		{"strict dns", with(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
			c.LoadAssignment.Endpoints[0].LbEndpoints[0] = lbEndpoint("backend.example", 80)
			c.DnsRefreshRate = dur(time.Second)
			c.DnsLookupFamily = clusterv3.Cluster_V4_ONLY
			c.DnsFailureRefreshRate = &clusterv3.Cluster_RefreshRate{BaseInterval: dur(time.Second)}
			c.RespectDnsTtl = true
			c.LbPolicy = clusterv3.Cluster_RANDOM
		}), func(t *testing.T, s *settings) {
			if s.kind != kindStrictDNS || s.lb != lbRandom || s.dnsRefresh != time.Second || s.family != clusterv3.Cluster_V4_ONLY ||
				s.dnsFailureBase != time.Second || s.dnsFailureMax != 10*time.Second {
				t.Errorf("settings = %+v", s)
			}
			if s.endpoints[0].address != "backend.example" || s.endpoints[0].ip.IsValid() {
				t.Errorf("endpoint = %+v", s.endpoints[0])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := compile(tc.cluster)
			if err != nil {
				t.Fatalf("compile: %v", err)
			}
			tc.check(t, s)
		})
	}
}
