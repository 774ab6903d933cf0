package watch

import (
	"net"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// routeRef is one HttpConnectionManager's use of RDS.
type routeRef struct {
	name       string // route_config_name
	source     *corev3.ConfigSource
	statPrefix string // the HCM's stat_prefix, for http.<prefix>.rds.<name>.*
	path       string // field path of the config source, for errors
}

// edsRef is an EDS cluster's use of EDS.
type edsRef struct {
	service string // eds_cluster_config.service_name or the cluster's name
	source  *corev3.ConfigSource
	path    string
}

// deps is what a listener or cluster refers to.
type deps struct {
	routes []routeRef
	eds    *edsRef
}

const hcmTypeURL = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"

// listenerDeps finds the RDS uses of every HCM in l's filter chains. An HCM
// that cannot be decoded is skipped: validation reports it.
func listenerDeps(l *listenerv3.Listener) deps {
	var d deps
	chains := l.GetFilterChains()
	if dc := l.GetDefaultFilterChain(); dc != nil {
		chains = append(chains[:len(chains):len(chains)], dc)
	}
	for i, fc := range chains {
		for j, f := range fc.GetFilters() {
			tc := f.GetTypedConfig()
			if tc.GetTypeUrl() != hcmTypeURL {
				continue
			}
			var h hcmv3.HttpConnectionManager
			if tc.UnmarshalTo(&h) != nil {
				continue
			}
			if rds := h.GetRds(); rds != nil {
				chain := "filter_chains[" + strconv.Itoa(i) + "]"
				if i == len(l.GetFilterChains()) {
					chain = "default_filter_chain"
				}
				d.routes = append(d.routes, routeRef{
					name:       rds.GetRouteConfigName(),
					source:     rds.GetConfigSource(),
					statPrefix: h.GetStatPrefix(),
					path:       chain + ".filters[" + strconv.Itoa(j) + "].typed_config.rds.config_source",
				})
			}
		}
	}
	return d
}

// clusterDeps finds an EDS cluster's endpoints subscription.
func clusterDeps(c *clusterv3.Cluster) deps {
	if c.GetType() != clusterv3.Cluster_EDS {
		return deps{}
	}
	svc := c.GetEdsClusterConfig().GetServiceName()
	if svc == "" {
		svc = c.GetName()
	}
	return deps{eds: &edsRef{service: svc, source: c.GetEdsClusterConfig().GetEdsConfig(), path: "eds_cluster_config.eds_config"}}
}

// listenerAddress is the host:port a listener binds, "" when it has none
// or uses port 0 (which never clashes).
func listenerAddress(l *listenerv3.Listener) string {
	sa := l.GetAddress().GetSocketAddress()
	if sa == nil || sa.GetPortValue() == 0 {
		return ""
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
}

// staticSet is the bootstrap's static resources with their dependencies.
type staticSet struct {
	listeners []*listenerv3.Listener
	clusters  []*clusterv3.Cluster
	lnames    map[string]bool
	cnames    map[string]bool
	addrs     map[string]string // address → static listener name
	ldeps     []deps
	cdeps     []deps
}

func newStaticSet(b *bootstrapv3.Bootstrap) staticSet {
	s := staticSet{lnames: map[string]bool{}, cnames: map[string]bool{}, addrs: map[string]string{}}
	s.listeners = b.GetStaticResources().GetListeners()
	s.clusters = b.GetStaticResources().GetClusters()
	for _, l := range s.listeners {
		s.lnames[l.GetName()] = true
		if a := listenerAddress(l); a != "" {
			s.addrs[a] = l.GetName()
		}
		s.ldeps = append(s.ldeps, listenerDeps(l))
	}
	for _, c := range s.clusters {
		s.cnames[c.GetName()] = true
		s.cdeps = append(s.cdeps, clusterDeps(c))
	}
	return s
}

func (s staticSet) routeRefs() []routeRef {
	var out []routeRef
	for _, d := range s.ldeps {
		out = append(out, d.routes...)
	}
	return out
}

func (s staticSet) edsRefs() []*edsRef {
	var out []*edsRef
	for _, d := range s.cdeps {
		if d.eds != nil {
			out = append(out, d.eds)
		}
	}
	return out
}
