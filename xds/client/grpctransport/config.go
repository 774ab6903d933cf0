package grpctransport

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/hopproxy/hop/xds/client"
)

// FieldError is a configuration error. Path is the field path relative to
// the ApiConfigSource ("grpc_services[0].envoy_grpc.cluster_name"), so that
// a caller can prefix where the ApiConfigSource sits in the bootstrap.
type FieldError struct {
	Path string
	Err  error
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(path string, format string, args ...any) error {
	return &FieldError{Path: path, Err: fmt.Errorf(format, args...)}
}

// FromConfigSource builds the Transport of an ApiConfigSource of the
// bootstrap. Only grpc_services[0] is used:
//
//   - envoy_grpc.cluster_name names a cluster of static (STATIC, STRICT_DNS
//     or LOGICAL_DNS); its first endpoint is dialled, a pipe address as a
//     unix socket. A transport_socket with an UpstreamTlsContext makes the
//     connection TLS (see upstreamTLS). The :authority is
//     envoy_grpc.authority, else the cluster name, as in Envoy.
//   - google_grpc.target_uri is dialled as a gRPC target, with TLS when
//     channel_credentials.ssl_credentials is set and plaintext otherwise.
//
// initial_metadata is sent on every stream.
func FromConfigSource(src *corev3.ApiConfigSource, static []*clusterv3.Cluster) (client.Transport, error) {
	if src == nil {
		return nil, &FieldError{Path: "api_config_source", Err: errors.New("missing")}
	}
	if len(src.GetGrpcServices()) == 0 {
		return nil, fieldErr("grpc_services", "at least one gRPC service is required")
	}
	gs := src.GetGrpcServices()[0]
	const p = "grpc_services[0]"
	md := map[string]string{}
	for i, hv := range gs.GetInitialMetadata() {
		if hv.GetKey() == "" {
			return nil, fieldErr(fmt.Sprintf("%s.initial_metadata[%d].key", p, i), "empty")
		}
		md[hv.GetKey()] = hv.GetValue()
	}
	switch {
	case gs.GetEnvoyGrpc() != nil:
		return fromEnvoyGrpc(gs.GetEnvoyGrpc(), static, p+".envoy_grpc", md)
	case gs.GetGoogleGrpc() != nil:
		return fromGoogleGrpc(gs.GetGoogleGrpc(), p+".google_grpc", md)
	}
	return nil, fieldErr(p, "one of envoy_grpc or google_grpc is required")
}

func fromEnvoyGrpc(eg *corev3.GrpcService_EnvoyGrpc, static []*clusterv3.Cluster, p string, md map[string]string) (client.Transport, error) {
	name := eg.GetClusterName()
	np := p + ".cluster_name"
	if name == "" {
		return nil, fieldErr(np, "empty")
	}
	var c *clusterv3.Cluster
	for _, sc := range static {
		if sc.GetName() == name {
			c = sc
			break
		}
	}
	if c == nil {
		return nil, fieldErr(np, "no static cluster named %q", name)
	}
	inCluster := func(err error) error {
		return &FieldError{Path: np, Err: fmt.Errorf("static cluster %q: %w", name, err)}
	}
	if c.GetClusterType() != nil {
		return nil, inCluster(errors.New("cluster_type: a custom cluster cannot carry the xDS connection"))
	}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
	default:
		return nil, inCluster(fmt.Errorf("type: %s cannot carry the xDS connection (want STATIC, STRICT_DNS or LOGICAL_DNS)", c.GetType()))
	}
	target, err := firstEndpoint(c)
	if err != nil {
		return nil, inCluster(err)
	}
	o := dialOptions{authority: eg.GetAuthority(), md: md}
	if o.authority == "" {
		o.authority = name
	}
	if v := eg.GetMaxReceiveMessageLength(); v != nil {
		o.maxRecv = int(v.GetValue())
	}
	if o.tls, err = upstreamTLS(c.GetTransportSocket(), "transport_socket"); err != nil {
		return nil, inCluster(err)
	}
	o.exactSNI = o.tls != nil
	return dial(target, o)
}

// firstEndpoint is the gRPC target of the first endpoint of a static
// cluster's load_assignment.
func firstEndpoint(c *clusterv3.Cluster) (string, error) {
	for i, lle := range c.GetLoadAssignment().GetEndpoints() {
		for j, lb := range lle.GetLbEndpoints() {
			addr := lb.GetEndpoint().GetAddress()
			if addr == nil {
				continue
			}
			path := fmt.Sprintf("load_assignment.endpoints[%d].lb_endpoints[%d].endpoint.address", i, j)
			if sa := addr.GetSocketAddress(); sa != nil {
				if sa.GetAddress() == "" {
					return "", fmt.Errorf("%s.socket_address.address: empty", path)
				}
				if sa.GetNamedPort() != "" {
					return "", fmt.Errorf("%s.socket_address.named_port: not supported, use port_value", path)
				}
				return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
			}
			if pipe := addr.GetPipe(); pipe != nil {
				if pipe.GetPath() == "" {
					return "", fmt.Errorf("%s.pipe.path: empty", path)
				}
				if pipe.GetPath()[0] == '@' {
					return "unix-abstract:" + pipe.GetPath()[1:], nil
				}
				return "unix://" + pipe.GetPath(), nil
			}
			return "", fmt.Errorf("%s: only socket_address and pipe are supported", path)
		}
	}
	return "", errors.New("load_assignment: no endpoint with an address")
}

func fromGoogleGrpc(gg *corev3.GrpcService_GoogleGrpc, p string, md map[string]string) (client.Transport, error) {
	if gg.GetTargetUri() == "" {
		return nil, fieldErr(p+".target_uri", "empty")
	}
	if len(gg.GetCallCredentials()) > 0 || len(gg.GetCallCredentialsPlugin()) > 0 {
		return nil, fieldErr(p+".call_credentials", "not supported")
	}
	if len(gg.GetChannelCredentialsPlugin()) > 0 {
		return nil, fieldErr(p+".channel_credentials_plugin", "not supported")
	}
	o := dialOptions{md: md}
	cc := gg.GetChannelCredentials()
	switch {
	case cc == nil, cc.GetLocalCredentials() != nil:
	case cc.GetSslCredentials() != nil:
		conf, err := sslCredentials(cc.GetSslCredentials(), p+".channel_credentials.ssl_credentials")
		if err != nil {
			return nil, err
		}
		o.tls = conf
	default:
		return nil, fieldErr(p+".channel_credentials", "only ssl_credentials and local_credentials are supported")
	}
	return dial(gg.GetTargetUri(), o)
}
