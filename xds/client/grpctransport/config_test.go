package grpctransport

import (
	"errors"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/emptypb"
)

func envoyGrpcSource(cluster string) *corev3.ApiConfigSource {
	return &corev3.ApiConfigSource{
		ApiType: corev3.ApiConfigSource_GRPC,
		GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
			EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: cluster},
		}}},
	}
}

func googleGrpcSource(gg *corev3.GrpcService_GoogleGrpc) *corev3.ApiConfigSource {
	return &corev3.ApiConfigSource{GrpcServices: []*corev3.GrpcService{{
		TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: gg},
	}}}
}

func socketEndpoint(host string, port uint32) *endpointv3.LbEndpoint {
	return &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
		Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}},
	}}}
}

// staticCluster is a STATIC cluster with one endpoint, optionally with a
// transport socket.
func staticCluster(name, host string, port uint32, socket proto.Message) *clusterv3.Cluster {
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{
			LbEndpoints: []*endpointv3.LbEndpoint{socketEndpoint(host, port)},
		}}},
	}
	if socket != nil {
		a, err := anypb.New(socket)
		if err != nil {
			panic(err)
		}
		c.TransportSocket = &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
	}
	return c
}

func TestFromConfigSourceErrors(t *testing.T) {
	withCluster := func(f func(*clusterv3.Cluster)) []*clusterv3.Cluster {
		c := staticCluster("xds", "127.0.0.1", 18000, nil)
		f(c)
		return []*clusterv3.Cluster{c}
	}
	tlsCluster := func(utc *tlsv3.UpstreamTlsContext) []*clusterv3.Cluster {
		return []*clusterv3.Cluster{staticCluster("xds", "127.0.0.1", 18000, utc)}
	}
	validation := func(vc *tlsv3.CertificateValidationContext) *tlsv3.UpstreamTlsContext {
		return &tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: vc},
		}}
	}
	tests := []struct {
		name    string
		src     *corev3.ApiConfigSource
		static  []*clusterv3.Cluster
		wantErr string
	}{
		{"no grpc services", &corev3.ApiConfigSource{}, nil, "grpc_services: at least one gRPC service is required"},
		{"no target", &corev3.ApiConfigSource{GrpcServices: []*corev3.GrpcService{{}}}, nil,
			"grpc_services[0]: one of envoy_grpc or google_grpc is required"},
		{"empty cluster name", envoyGrpcSource(""), nil, "grpc_services[0].envoy_grpc.cluster_name: empty"},
		{"unknown cluster", envoyGrpcSource("xds"), []*clusterv3.Cluster{staticCluster("other", "127.0.0.1", 1, nil)},
			`grpc_services[0].envoy_grpc.cluster_name: no static cluster named "xds"`},
		{"eds cluster", envoyGrpcSource("xds"), withCluster(func(c *clusterv3.Cluster) {
			c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		}), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": type: EDS cannot carry the xDS connection (want STATIC, STRICT_DNS or LOGICAL_DNS)`},
		{"no endpoint", envoyGrpcSource("xds"), withCluster(func(c *clusterv3.Cluster) { c.LoadAssignment = nil }),
			`grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": load_assignment: no endpoint with an address`},
		{"named port", envoyGrpcSource("xds"), withCluster(func(c *clusterv3.Cluster) {
			sa := c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress()
			sa.PortSpecifier = &corev3.SocketAddress_NamedPort{NamedPort: "grpc"}
		}), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.named_port: not supported, use port_value`},
		{"unknown transport socket", envoyGrpcSource("xds"), withCluster(func(c *clusterv3.Cluster) {
			a, _ := anypb.New(&emptypb.Empty{})
			c.TransportSocket = &corev3.TransportSocket{Name: "x", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: a}}
		}), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": transport_socket.typed_config: unsupported transport socket "type.googleapis.com/google.protobuf.Empty"`},
		{"sds certificate", envoyGrpcSource("xds"), tlsCluster(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "cert"}},
		}}), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": transport_socket.typed_config.common_tls_context.tls_certificate_sds_secret_configs: unsupported field`},
		{"missing trusted_ca file", envoyGrpcSource("xds"), tlsCluster(validation(&tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: "/nonexistent/ca.pem"}},
		})), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": transport_socket.typed_config.common_tls_context.validation_context.trusted_ca: open /nonexistent/ca.pem: no such file or directory`},
		{"trusted_ca not PEM", envoyGrpcSource("xds"), tlsCluster(validation(&tlsv3.CertificateValidationContext{
			TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "nope"}},
		})), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": transport_socket.typed_config.common_tls_context.validation_context.trusted_ca: no PEM certificate found`},
		{"key without chain", envoyGrpcSource("xds"), tlsCluster(&tlsv3.UpstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{PrivateKey: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "k"}}}},
		}}), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": transport_socket.typed_config.common_tls_context.tls_certificates[0].certificate_chain: required`},
		{"spki pinning", envoyGrpcSource("xds"), tlsCluster(validation(&tlsv3.CertificateValidationContext{
			VerifyCertificateSpki: []string{"abc"},
		})), `grpc_services[0].envoy_grpc.cluster_name: static cluster "xds": transport_socket.typed_config.common_tls_context.validation_context.verify_certificate_spki: unsupported field`},
		{"google empty target", googleGrpcSource(&corev3.GrpcService_GoogleGrpc{}), nil, "grpc_services[0].google_grpc.target_uri: empty"},
		{"google call credentials", googleGrpcSource(&corev3.GrpcService_GoogleGrpc{TargetUri: "localhost:1",
			CallCredentials: []*corev3.GrpcService_GoogleGrpc_CallCredentials{{}}}), nil, "grpc_services[0].google_grpc.call_credentials: not supported"},
		{"google default credentials", googleGrpcSource(&corev3.GrpcService_GoogleGrpc{TargetUri: "localhost:1",
			ChannelCredentials: &corev3.GrpcService_GoogleGrpc_ChannelCredentials{CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_GoogleDefault{GoogleDefault: &emptypb.Empty{}}},
		}), nil, "grpc_services[0].google_grpc.channel_credentials: only ssl_credentials and local_credentials are supported"},
		{"google missing root certs", googleGrpcSource(&corev3.GrpcService_GoogleGrpc{TargetUri: "localhost:1",
			ChannelCredentials: &corev3.GrpcService_GoogleGrpc_ChannelCredentials{CredentialSpecifier: &corev3.GrpcService_GoogleGrpc_ChannelCredentials_SslCredentials{
				SslCredentials: &corev3.GrpcService_GoogleGrpc_SslCredentials{RootCerts: &corev3.DataSource{Specifier: &corev3.DataSource_EnvironmentVariable{EnvironmentVariable: "HOP_TEST_UNSET_VARIABLE"}}},
			}},
		}), nil, `grpc_services[0].google_grpc.channel_credentials.ssl_credentials.root_certs: environment variable "HOP_TEST_UNSET_VARIABLE" is not set`},
		{"empty metadata key", &corev3.ApiConfigSource{GrpcServices: []*corev3.GrpcService{{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "xds"}},
			InitialMetadata: []*corev3.HeaderValue{{Key: "", Value: "v"}},
		}}}, nil, "grpc_services[0].initial_metadata[0].key: empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := FromConfigSource(tc.src, tc.static)
			if err == nil {
				tr.Close()
				t.Fatalf("no error, want %q", tc.wantErr)
			}
			if err.Error() != tc.wantErr {
				t.Errorf("error:\n got %s\nwant %s", err, tc.wantErr)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Errorf("error %v is not a *FieldError", err)
			}
		})
	}
}

func TestFirstEndpointTargets(t *testing.T) {
	pipe := func(path string) *clusterv3.Cluster {
		c := staticCluster("xds", "127.0.0.1", 1, nil)
		c.LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().Address = &corev3.Address{
			Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}},
		}
		return c
	}
	dns := staticCluster("xds", "xds.example.com", 18000, nil)
	dns.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
	v6 := staticCluster("xds", "::1", 18000, nil)
	tests := []struct {
		c    *clusterv3.Cluster
		want string
	}{
		{staticCluster("xds", "127.0.0.1", 18000, nil), "127.0.0.1:18000"},
		{v6, "[::1]:18000"},
		{dns, "xds.example.com:18000"},
		{pipe("/run/xds.sock"), "unix:///run/xds.sock"},
		{pipe("@xds"), "unix-abstract:xds"},
	}
	for _, tc := range tests {
		got, err := firstEndpoint(tc.c)
		if err != nil || got != tc.want {
			t.Errorf("firstEndpoint = %q, %v; want %q", got, err, tc.want)
		}
	}
}
