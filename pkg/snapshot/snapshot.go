// Package snapshot compiles one consistent set of Envoy resources (a Bundle)
// into an immutable Snapshot: per listener, the filter-chain matcher and the
// compiled network filters of each chain. All CPU work of a config change
// happens here, before anything is published; if Compile fails nothing
// changes. Store holds the published Snapshot behind an atomic pointer.
package snapshot

import (
	"crypto/tls"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"

	"github.com/hopproxy/hop/pkg/filter"
	"github.com/hopproxy/hop/pkg/hcm"
	"github.com/hopproxy/hop/pkg/router"
	"github.com/hopproxy/hop/pkg/stats"
	"github.com/hopproxy/hop/pkg/tcpproxy"
	"github.com/hopproxy/hop/pkg/tlsconfig"
	"github.com/hopproxy/hop/pkg/upstream"
)

// Bundle is one consistent set of validated resources. Its protos are
// never modified by anyone once handed over: an unchanged resource is the
// same pointer from one Bundle to the next, which lets Compile reuse what
// it compiled before.
type Bundle struct {
	Version   string
	Listeners []*listenerv3.Listener
	Clusters  []*clusterv3.Cluster
	// Routes are the RDS resources by name; an HCM whose rds names a route
	// configuration missing here serves an empty route table.
	Routes map[string]*routev3.RouteConfiguration
	// Endpoints are the EDS resources by service name
	// (eds_cluster_config.service_name, or the cluster's name).
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
}

// Snapshot is a compiled Bundle. It is never mutated after Compile.
type Snapshot struct {
	Version   string
	Listeners []*Listener
	Clusters  []*clusterv3.Cluster
	// Endpoints maps an EDS cluster's name to its ClusterLoadAssignment
	// (nil when none arrived: the cluster has no hosts).
	Endpoints map[string]*endpointv3.ClusterLoadAssignment
}

// EDSServiceName is the EDS resource name of an EDS cluster:
// eds_cluster_config.service_name, or the cluster's name.
func EDSServiceName(c *clusterv3.Cluster) string {
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

// Listener is one compiled listener.
type Listener struct {
	Proto    *listenerv3.Listener
	Name     string // the listener's name, or its address when unnamed
	Address  string // host:port to bind; "" for an internal listener
	StatName string // listener.<StatName>.* stats
	// Internal is set for a listener with internal_listener (Envoy's
	// envoy.bootstrap.internal_listener): it has no socket and is reached
	// by name from clusters whose endpoints carry an
	// envoy_internal_address, through listener.Manager.DialInternal.
	Internal bool
	Chains   []*FilterChain
	Default  *FilterChain // default_filter_chain, may be nil
	// SniffTLS is true when a tls_inspector listener filter is configured
	// and some chain matches on SNI, ALPN or transport protocol: each
	// connection's first bytes are then read to learn them.
	SniffTLS bool
	// HasTLS is true when some chain of a TCP listener terminates TLS:
	// connections are then dispatched off the accept loop.
	HasTLS bool
	// QUIC is set for a UDP listener (socket_address.protocol UDP with
	// udp_listener_config.quic_options): it is served over QUIC/HTTP/3,
	// and every chain has a QUIC transport socket and an HTTP/3 codec.
	QUIC *hcm.QUICOptions
}

// FilterChain is one compiled filter chain.
type FilterChain struct {
	Name  string
	match chainMatch
	// Exactly one of HCM and TCP is set: the chain's only network filter.
	HCM  *hcm.Config      // the chain's http_connection_manager
	TCP  *tcpproxy.Config // the chain's tcp_proxy
	TLS  *tls.Config      // the transport socket's TLS config; nil = plaintext
	QUIC bool             // the transport socket is envoy.transport_sockets.quic (TLS set)
	// HandshakeTimeout is transport_socket_connect_timeout (0 = unset): how
	// long a TLS handshake may take.
	HandshakeTimeout time.Duration
}

const (
	hcmTypeURL          = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	tcpProxyTypeURL     = "type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy"
	tlsInspectorTypeURL = "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"
)

// Compile builds a Snapshot. Errors name the resource and field path. prev,
// when not nil, is the snapshot being replaced: a listener whose proto and
// route configurations are the very same pointers as there is taken over
// as is instead of being compiled again, so that a push that changes one
// listener costs one listener's compile, and the listener manager sees
// that the others did not change.
//
// tables, when not nil, holds route tables already compiled from some of
// b.Routes (RouteTables.Compile); they are used instead of compiling again.
func Compile(b Bundle, reg *filter.Registry, st *stats.Store, prev *Snapshot, tables *RouteTables) (*Snapshot, error) {
	snap := &Snapshot{Version: b.Version, Clusters: b.Clusters, Endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}
	routes := func(name string) (*routev3.RouteConfiguration, *router.Table) {
		rc := b.Routes[name]
		return rc, tables.lookup(rc)
	}
	old := map[*listenerv3.Listener]*Listener{}
	if prev != nil {
		for _, l := range prev.Listeners {
			old[l.Proto] = l
		}
	}
	seenName := map[string]bool{}
	for i, c := range b.Clusters {
		if seenName[c.GetName()] {
			return nil, fmt.Errorf("clusters[%d]: duplicate cluster name %q", i, c.GetName())
		}
		seenName[c.GetName()] = true
		if err := upstream.Compile(c); err != nil {
			return nil, fmt.Errorf("clusters[%d]: %w", i, err)
		}
		if c.GetType() == clusterv3.Cluster_EDS {
			cla := b.Endpoints[EDSServiceName(c)]
			if cla != nil {
				if err := upstream.CompileEndpoints(cla); err != nil {
					return nil, fmt.Errorf("clusters[%d]: endpoints %q: %w", i, EDSServiceName(c), err)
				}
			}
			snap.Endpoints[c.GetName()] = cla
		}
	}
	seenName = map[string]bool{}
	seenAddr := map[string]bool{}
	for i, lp := range b.Listeners {
		l := old[lp]
		if l == nil || !l.sameRoutes(routes) {
			var err error
			l, err = CompileListener(lp, reg, st, routes)
			if err != nil {
				return nil, fmt.Errorf("listeners[%d]: %w", i, err)
			}
		}
		if seenName[l.Name] {
			return nil, fmt.Errorf("listeners[%d]: duplicate listener name %q", i, l.Name)
		}
		addrKey := l.Address // a UDP (QUIC) listener may share its port with a TCP one
		if l.QUIC != nil {
			addrKey = "udp:" + addrKey
		}
		if !l.Internal && seenAddr[addrKey] {
			return nil, fmt.Errorf("listeners[%d]: address %s is already used by another listener", i, l.Address)
		}
		seenName[l.Name], seenAddr[addrKey] = true, true
		snap.Listeners = append(snap.Listeners, l)
	}
	return snap, nil
}

// sameRoutes reports whether every RDS route configuration l was compiled
// with is still the one routes returns.
func (l *Listener) sameRoutes(routes hcm.RouteSource) bool {
	for _, fc := range l.allChains() {
		if fc.HCM == nil {
			continue
		}
		if n := fc.HCM.RouteConfigName(); n != "" {
			if rc, _ := routes(n); rc != fc.HCM.RouteConfig() {
				return false
			}
		}
	}
	return true
}

// allChains returns the filter chains and the default chain, if any.
func (l *Listener) allChains() []*FilterChain {
	out := append([]*FilterChain(nil), l.Chains...)
	if l.Default != nil {
		out = append(out, l.Default)
	}
	return out
}

// RouteConfigNames lists the RDS route configurations l's connection
// managers use.
func (l *Listener) RouteConfigNames() []string {
	var out []string
	for _, fc := range l.allChains() {
		if fc.HCM == nil {
			continue
		}
		if n := fc.HCM.RouteConfigName(); n != "" {
			out = append(out, n)
		}
	}
	return out
}

// CompileListener compiles one listener; routes resolves RDS names (see
// hcm.Compile).
func CompileListener(lp *listenerv3.Listener, reg *filter.Registry, st *stats.Store, routes hcm.RouteSource) (*Listener, error) {
	l, err := compileSocket(lp)
	if err != nil {
		return nil, err
	}
	for i, lf := range lp.GetListenerFilters() {
		switch lf.GetTypedConfig().GetTypeUrl() {
		case tlsInspectorTypeURL:
			l.SniffTLS = true
		default:
			return nil, fmt.Errorf("listener_filters[%d].typed_config: unsupported listener filter type %q", i, lf.GetTypedConfig().GetTypeUrl())
		}
	}
	for i, fc := range lp.GetFilterChains() {
		c, err := compileChain(fc, reg, st, routes)
		if err != nil {
			return nil, fmt.Errorf("filter_chains[%d]%w", i, err)
		}
		l.Chains = append(l.Chains, c)
	}
	if dfc := lp.GetDefaultFilterChain(); dfc != nil {
		c, err := compileChain(dfc, reg, st, routes)
		if err != nil {
			return nil, fmt.Errorf("default_filter_chain%w", err)
		}
		l.Default = c
	}
	if len(l.Chains) == 0 && l.Default == nil {
		return nil, fmt.Errorf("filter_chains: a listener needs at least one filter chain")
	}
	if err := checkDuplicateMatches(l.Chains); err != nil {
		return nil, err
	}
	if err := l.checkQUIC(); err != nil {
		return nil, err
	}
	l.SniffTLS = l.SniffTLS && l.needsTLSInfo()
	for _, fc := range l.allChains() {
		l.HasTLS = l.HasTLS || (fc.TLS != nil && !fc.QUIC)
	}
	return l, nil
}

// compileSocket compiles what a listener listens on: a socket address
// (TCP, or UDP for QUIC) or, with internal_listener, nothing but its name,
// with Envoy's errors for the mix-ups.
func compileSocket(lp *listenerv3.Listener) (*Listener, error) {
	l := &Listener{Proto: lp, Name: lp.GetName(), StatName: lp.GetStatPrefix()}
	if lp.GetInternalListener() != nil {
		if lp.GetAddress() != nil {
			return nil, fmt.Errorf("address: error adding listener '%s': address should not be used when an internal listener config is provided", lp.GetName())
		}
		if l.Name == "" {
			return nil, fmt.Errorf("name: an internal listener needs a name: endpoints reach it by server_listener_name")
		}
		l.Internal = true
		if l.StatName == "" {
			l.StatName = "envoy_internal_" + l.Name // as Envoy's listenerStatsScope
		}
		return l, nil
	}
	if lp.GetAddress().GetEnvoyInternalAddress() != nil {
		return nil, fmt.Errorf("address: error adding listener named '%s': use internal_listener field instead of address for internal listeners", lp.GetName())
	}
	sa := lp.GetAddress().GetSocketAddress()
	if sa == nil {
		return nil, fmt.Errorf("address: only socket_address is supported")
	}
	if sa.GetPortSpecifier() == nil {
		return nil, fmt.Errorf("address.socket_address: port_value is required")
	}
	l.Address = net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
	if sa.GetProtocol() == corev3.SocketAddress_UDP {
		q, err := hcm.CompileQUIC(lp.GetUdpListenerConfig())
		if err != nil {
			return nil, err
		}
		l.QUIC = q
	}
	if l.StatName == "" {
		l.StatName = stats.ListenerStatName(sa.GetAddress(), sa.GetPortValue())
	}
	if l.Name == "" {
		l.Name = l.Address
	}
	return l, nil
}

func compileChain(fc *listenerv3.FilterChain, reg *filter.Registry, st *stats.Store, routes hcm.RouteSource) (*FilterChain, error) {
	c := &FilterChain{Name: fc.GetName()}
	conf, quic, err := tlsconfig.DownstreamSocket(fc.GetTransportSocket())
	if err != nil {
		return nil, fmt.Errorf(".transport_socket.%w", err)
	}
	c.TLS, c.QUIC = conf, quic
	if d := fc.GetTransportSocketConnectTimeout(); d != nil {
		c.HandshakeTimeout = d.AsDuration()
	}
	m, err := compileMatch(fc.GetFilterChainMatch())
	if err != nil {
		return nil, fmt.Errorf(".filter_chain_match%w", err)
	}
	c.match = m
	if len(fc.GetFilters()) != 1 {
		return nil, fmt.Errorf(".filters: exactly one network filter (http_connection_manager or tcp_proxy) is supported, got %d", len(fc.GetFilters()))
	}
	f := fc.GetFilters()[0]
	tc := f.GetTypedConfig()
	switch tc.GetTypeUrl() {
	case hcmTypeURL:
	case tcpProxyTypeURL:
		var p tcpv3.TcpProxy
		if err := tc.UnmarshalTo(&p); err != nil {
			return nil, fmt.Errorf(".filters[0].typed_config: %w", err)
		}
		t, err := tcpproxy.Compile(&p, st)
		if err != nil {
			return nil, fmt.Errorf(".filters[0].typed_config: %w", err)
		}
		c.TCP = t
		return c, nil
	default:
		return nil, fmt.Errorf(".filters[0].typed_config: unsupported network filter type %q", tc.GetTypeUrl())
	}
	var p hcmv3.HttpConnectionManager
	if err := tc.UnmarshalTo(&p); err != nil {
		return nil, fmt.Errorf(".filters[0].typed_config: %w", err)
	}
	h, err := hcm.Compile(&p, reg, st, routes)
	if err != nil {
		return nil, fmt.Errorf(".filters[0].typed_config: %w", err)
	}
	c.HCM = h
	return c, nil
}

// RouteTables remembers the route tables compiled from RDS resources, by
// proto pointer, so that a route configuration checked on its own (to
// reject it by name) is not compiled a second time inside the snapshot.
// The zero value is ready; it is safe for concurrent use.
type RouteTables struct {
	mu sync.Mutex
	m  map[*routev3.RouteConfiguration]*router.Table
}

// Compile compiles rc and remembers the table.
func (t *RouteTables) Compile(rc *routev3.RouteConfiguration) (*router.Table, error) {
	tbl, err := router.Compile(rc)
	if err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[*routev3.RouteConfiguration]*router.Table{}
	}
	t.m[rc] = tbl
	return tbl, nil
}

func (t *RouteTables) lookup(rc *routev3.RouteConfiguration) *router.Table {
	if t == nil || rc == nil {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.m[rc]
}

// Keep forgets every table whose proto is not in keep.
func (t *RouteTables) Keep(keep map[string]*routev3.RouteConfiguration) {
	live := map[*routev3.RouteConfiguration]bool{}
	for _, rc := range keep {
		live[rc] = true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for rc := range t.m {
		if !live[rc] {
			delete(t.m, rc)
		}
	}
}

// Store publishes snapshots. Readers Load once and keep that view.
type Store struct{ p atomic.Pointer[Snapshot] }

// Load returns the published snapshot (nil before the first Publish).
func (s *Store) Load() *Snapshot { return s.p.Load() }

// Publish makes snap the current snapshot.
func (s *Store) Publish(snap *Snapshot) { s.p.Store(snap) }

// checkQUIC checks that a QUIC listener's chains are QUIC chains with an
// HTTP/3 connection manager, and that other listeners have none, with
// Envoy's messages where it has them.
func (l *Listener) checkQUIC() error {
	if l.QUIC != nil && len(l.Proto.GetListenerFilters()) > 0 {
		return fmt.Errorf("listener_filters: not supported on a QUIC listener")
	}
	check := func(fc *FilterChain, path string) error {
		h3 := fc.HCM != nil && fc.HCM.Proto().GetCodecType() == hcmv3.HttpConnectionManager_HTTP3
		switch {
		case l.QUIC != nil && fc.TCP != nil:
			return fmt.Errorf("%s.filters[0].typed_config: tcp_proxy is not supported on a QUIC listener", path)
		case l.QUIC != nil && !fc.QUIC:
			return fmt.Errorf("%s.transport_socket: a QUIC listener needs an envoy.transport_sockets.quic transport socket (QuicDownstreamTransport)", path)
		case l.QUIC != nil && !h3:
			return fmt.Errorf("%s.filters[0].typed_config: hcm: Non-HTTP/3 codec configured on QUIC listener.", path)
		case l.QUIC == nil && fc.QUIC:
			return fmt.Errorf("%s.transport_socket: a QUIC transport socket needs a UDP listener with udp_listener_config.quic_options", path)
		case l.QUIC == nil && h3:
			return fmt.Errorf("%s.filters[0].typed_config: hcm: HTTP/3 codec configured on non-QUIC listener.", path)
		}
		return nil
	}
	for i, fc := range l.Chains {
		if err := check(fc, fmt.Sprintf("filter_chains[%d]", i)); err != nil {
			return err
		}
	}
	if l.Default != nil {
		return check(l.Default, "default_filter_chain")
	}
	return nil
}
