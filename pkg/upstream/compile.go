package upstream

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// Envoy's defaults (source/common/upstream/upstream_impl.cc and the API docs).
const (
	defaultConnectTimeout     = 5 * time.Second
	defaultIdleTimeout        = time.Hour
	defaultDNSRefreshRate     = 5 * time.Second
	defaultMaxResponseHeaders = 60 << 10
	defaultPanicThreshold     = 50.0
)

// httpOptionsName is the typed_extension_protocol_options key, and the type
// name, of the upstream HTTP protocol options.
const httpOptionsName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

type clusterKind int

const (
	kindStatic clusterKind = iota
	kindStrictDNS
	kindLogicalDNS
	kindEDS
	kindOriginalDst
)

type lbKind int

const (
	lbRoundRobin lbKind = iota
	lbRandom
	// lbClusterProvided is CLUSTER_PROVIDED: the cluster type chooses the
	// host (ORIGINAL_DST, the only type hop has that provides one).
	lbClusterProvided
)

// endpointSpec is one lb_endpoint after validation.
type endpointSpec struct {
	address string     // as configured: an IP literal, or a hostname for DNS clusters
	ip      netip.Addr // valid when address is an IP literal
	port    uint16
	// internal is an envoy_internal_address's server_listener_name (then
	// address, ip and port are unset), endpointID its endpoint_id.
	internal, endpointID string
	hostname             string // endpoint.hostname
	weight               uint32
	health               corev3.HealthStatus
	locality             *corev3.Locality
}

// settings is a compiled Cluster: defaults applied, durations converted.
// Immutable once compile returns.
type settings struct {
	name, statName string
	kind           clusterKind
	lb             lbKind
	endpoints      []endpointSpec // load_assignment's; none for EDS
	edsServiceName string         // EDS: eds_cluster_config.service_name, or name
	od             originalDst    // ORIGINAL_DST: original_dst_lb_config and cleanup_interval

	connectTimeout     time.Duration
	idleTimeout        time.Duration // 0: never close idle pooled connections
	maxRequestsPerConn uint32        // 0: unlimited
	maxResponseHeaders int64
	panicThreshold     float64 // percent; 0 disables panic mode

	family                        clusterv3.Cluster_DnsLookupFamily
	dnsRefresh, dnsJitter         time.Duration
	dnsFailureBase, dnsFailureMax time.Duration // 0: use dnsRefresh
	keepAlive                     net.KeepAliveConfig
	localAddr                     *net.TCPAddr

	mode     protocolMode // how requests pick HTTP/1.1 or HTTP/2
	h2       h2Options    // Http2ProtocolOptions of the mode
	h2Set    bool         // Http2ProtocolOptions are configured (Envoy's HTTP2 cluster feature)
	autoPath string       // auto_config's field path, for errors

	// tls is the UpstreamTlsContext's config (nil: plaintext), with
	// VerifyConnection wrapped to mark verification failures. The per-use
	// configs differ only in NextProtos: tlsH1 for HTTP/1.1 pools, tlsH2
	// for HTTP/2 pools, tlsAuto for auto_config, tlsDial for Dial.
	tls, tlsH1, tlsH2, tlsAuto, tlsDial *tls.Config
}

// Compile checks c as Manager.Add would, without starting anything. It is
// what `hop --mode validate` runs.
func Compile(c *clusterv3.Cluster) error {
	_, err := compile(c)
	return err
}

func compile(c *clusterv3.Cluster) (*settings, error) {
	if c == nil {
		return nil, errors.New("upstream: nil cluster")
	}
	s, err := compileCluster(c)
	if err != nil {
		return nil, fmt.Errorf("upstream: cluster %q: %w", c.GetName(), err)
	}
	return s, nil
}

func compileCluster(c *clusterv3.Cluster) (*settings, error) {
	if err := c.ValidateAll(); err != nil {
		return nil, err
	}
	if err := checkFields(c.ProtoReflect(), clusterFields, ""); err != nil {
		return nil, err
	}
	s := &settings{
		name:               c.GetName(),
		statName:           c.GetName(),
		connectTimeout:     durationOr(c.GetConnectTimeout(), defaultConnectTimeout),
		idleTimeout:        defaultIdleTimeout,
		maxResponseHeaders: defaultMaxResponseHeaders,
		panicThreshold:     defaultPanicThreshold,
		family:             c.GetDnsLookupFamily(),
		dnsRefresh:         durationOr(c.GetDnsRefreshRate(), defaultDNSRefreshRate),
		dnsJitter:          durationOr(c.GetDnsJitter(), 0),
		keepAlive:          net.KeepAliveConfig{Enable: false, Idle: -1, Interval: -1, Count: -1},
	}
	if c.GetAltStatName() != "" {
		s.statName = c.GetAltStatName()
	}
	switch t := c.GetType(); t {
	case clusterv3.Cluster_STATIC:
		s.kind = kindStatic
	case clusterv3.Cluster_STRICT_DNS:
		s.kind = kindStrictDNS
	case clusterv3.Cluster_LOGICAL_DNS:
		s.kind = kindLogicalDNS
	case clusterv3.Cluster_EDS:
		s.kind = kindEDS
		// As Envoy's EdsClusterFactory; eds_config itself is the xDS
		// layer's business.
		if c.GetEdsClusterConfig() == nil {
			return nil, errors.New("eds_cluster_config: cannot create an EDS cluster without an EDS config")
		}
		s.edsServiceName = c.GetEdsClusterConfig().GetServiceName()
		if s.edsServiceName == "" {
			s.edsServiceName = s.name
		}
	case clusterv3.Cluster_ORIGINAL_DST:
		s.kind = kindOriginalDst
	default:
		return nil, fmt.Errorf("type: %s clusters: %w", t, ErrUnsupported)
	}
	switch p := c.GetLbPolicy(); p {
	case clusterv3.Cluster_ROUND_ROBIN:
		s.lb = lbRoundRobin
	case clusterv3.Cluster_RANDOM:
		s.lb = lbRandom
	case clusterv3.Cluster_CLUSTER_PROVIDED:
		s.lb = lbClusterProvided
	default:
		return nil, fmt.Errorf("lb_policy: %s: %w", p, ErrUnsupported)
	}
	if err := compileOriginalDst(c, s); err != nil {
		return nil, err
	}
	if err := compileProtocol(c, s); err != nil {
		return nil, err
	}
	if err := compileTransportSocket(c.GetTransportSocket(), s); err != nil {
		return nil, err
	}
	if err := checkAutoNeedsTLS(s); err != nil {
		return nil, err
	}
	if err := compileConnection(c, s); err != nil {
		return nil, err
	}
	if err := compileEndpoints(c, s); err != nil {
		return nil, err
	}
	return s, nil
}

// compileConnection covers DNS, panic threshold, keep-alive and bind options.
func compileConnection(c *clusterv3.Cluster, s *settings) error {
	if fr := c.GetDnsFailureRefreshRate(); fr != nil {
		s.dnsFailureBase = fr.GetBaseInterval().AsDuration()
		s.dnsFailureMax = 10 * s.dnsFailureBase
		if fr.GetMaxInterval() != nil {
			s.dnsFailureMax = fr.GetMaxInterval().AsDuration()
		}
		if s.dnsFailureMax < s.dnsFailureBase {
			return errors.New("dns_failure_refresh_rate: max_interval must be greater than or equal to base_interval")
		}
	}
	if pt := c.GetCommonLbConfig().GetHealthyPanicThreshold(); pt != nil {
		s.panicThreshold = pt.GetValue()
	}
	if ka := c.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka != nil {
		s.keepAlive.Enable = true
		if v := ka.GetKeepaliveTime(); v != nil {
			s.keepAlive.Idle = time.Duration(v.GetValue()) * time.Second
		}
		if v := ka.GetKeepaliveInterval(); v != nil {
			s.keepAlive.Interval = time.Duration(v.GetValue()) * time.Second
		}
		if v := ka.GetKeepaliveProbes(); v != nil {
			s.keepAlive.Count = int(v.GetValue())
		}
	}
	if sa := c.GetUpstreamBindConfig().GetSourceAddress(); sa != nil {
		ip, err := netip.ParseAddr(sa.GetAddress())
		if err != nil {
			return fmt.Errorf("upstream_bind_config.source_address.address: malformed IP address: %s", sa.GetAddress())
		}
		s.localAddr = net.TCPAddrFromAddrPort(netip.AddrPortFrom(ip, uint16(sa.GetPortValue())))
	}
	return nil
}

// compileEndpoints compiles load_assignment. An EDS cluster ignores it, as
// Envoy's EdsClusterImpl does (its hosts come from SetEndpoints); only the
// field allowlist applies to it then.
func compileEndpoints(c *clusterv3.Cluster, s *settings) error {
	if s.kind == kindEDS {
		return nil
	}
	eps, err := compileLocalities(c.GetLoadAssignment().GetEndpoints(), s.kind, "load_assignment.")
	if err != nil {
		return err
	}
	s.endpoints = eps
	if s.kind == kindLogicalDNS {
		eps := c.GetLoadAssignment().GetEndpoints()
		if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
			if c.GetLoadAssignment() != nil {
				return errors.New("LOGICAL_DNS clusters must have a single locality_lb_endpoint and a single lb_endpoint")
			}
			return errors.New("LOGICAL_DNS clusters must have a single host")
		}
	}
	return nil
}

// compileLocalities compiles the endpoints of a ClusterLoadAssignment, in
// order. prefix starts every error path.
func compileLocalities(lles []*endpointv3.LocalityLbEndpoints, kind clusterKind, prefix string) ([]endpointSpec, error) {
	var out []endpointSpec
	for i, lle := range lles {
		lp := fmt.Sprintf("%sendpoints[%d]", prefix, i)
		if lle.GetPriority() != 0 {
			return nil, fmt.Errorf("%s.priority: %w: only priority 0 is supported", lp, ErrUnsupported)
		}
		for j, lbe := range lle.GetLbEndpoints() {
			ap := fmt.Sprintf("%s.lb_endpoints[%d].endpoint.address", lp, j)
			ep, err := compileEndpoint(lbe.GetEndpoint().GetAddress(), kind, ap)
			if err != nil {
				return nil, err
			}
			ep.hostname = lbe.GetEndpoint().GetHostname()
			ep.weight = 1
			if w := lbe.GetLoadBalancingWeight(); w != nil {
				ep.weight = w.GetValue()
			}
			ep.health = lbe.GetHealthStatus()
			ep.locality = lle.GetLocality()
			out = append(out, ep)
		}
	}
	return out, nil
}

func compileEndpoint(addr *corev3.Address, kind clusterKind, path string) (endpointSpec, error) {
	if ia := addr.GetEnvoyInternalAddress(); ia != nil {
		// Resolution needs a socket address; EDS and STATIC take internal
		// addresses as they are.
		if kind == kindStrictDNS || kind == kindLogicalDNS {
			return endpointSpec{}, fmt.Errorf("%s.envoy_internal_address: %w: DNS clusters resolve socket addresses only", path, ErrUnsupported)
		}
		name := ia.GetServerListenerName()
		if name == "" {
			return endpointSpec{}, fmt.Errorf("%s.envoy_internal_address.server_listener_name: must be set", path)
		}
		return endpointSpec{internal: name, endpointID: ia.GetEndpointId()}, nil
	}
	sa := addr.GetSocketAddress()
	if sa == nil {
		return endpointSpec{}, fmt.Errorf("%s: a socket_address or envoy_internal_address is required", path)
	}
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return endpointSpec{}, fmt.Errorf("%s.socket_address.protocol: %w: %s", path, ErrUnsupported, sa.GetProtocol())
	}
	port := sa.GetPortValue()
	if port == 0 || port > 65535 {
		return endpointSpec{}, fmt.Errorf("%s.socket_address.port_value: must be between 1 and 65535, got %d", path, port)
	}
	ep := endpointSpec{address: sa.GetAddress(), port: uint16(port)}
	if ip, err := netip.ParseAddr(sa.GetAddress()); err == nil {
		ep.ip = ip.Unmap()
	} else if kind == kindStatic || kind == kindEDS {
		return endpointSpec{}, fmt.Errorf("%s.socket_address.address: malformed IP address: %s", path, sa.GetAddress())
	}
	return ep, nil
}

// needsDNS reports whether the endpoint's address must be resolved.
func (ep *endpointSpec) needsDNS() bool { return ep.internal == "" && !ep.ip.IsValid() }

// key identifies a resolved endpoint: "ip:port", or for an internal
// address Envoy's form of it, "envoy://<listener>/<endpoint_id>".
func (ep *endpointSpec) key() string {
	if ep.internal != "" {
		return internalKey(ep.internal, ep.endpointID)
	}
	return netip.AddrPortFrom(ep.ip, ep.port).String()
}

func durationOr(d *durationpb.Duration, def time.Duration) time.Duration {
	if d == nil {
		return def
	}
	return d.AsDuration()
}
