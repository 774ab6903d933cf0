package upstream

import (
	"fmt"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
)

// CompileEndpoints checks a ClusterLoadAssignment as Manager.SetEndpoints
// would, without a cluster, so that an EDS response can be rejected (NACKed)
// before anything is applied. A nil cla is valid: no endpoints. It does not
// check cluster_name against a cluster's EDS service name; SetEndpoints does.
func CompileEndpoints(cla *endpointv3.ClusterLoadAssignment) error {
	if _, err := compileCLA(cla); err != nil {
		return fmt.Errorf("upstream: load assignment %q: %w", cla.GetClusterName(), err)
	}
	return nil
}

// compileCLA validates an EDS ClusterLoadAssignment and returns its
// endpoints in order. Envoy's EDS needs resolved addresses, so every
// address must be an IP literal (or an internal address). A repeated
// address keeps its first lb_endpoint, as in Envoy's EdsClusterImpl.
func compileCLA(cla *endpointv3.ClusterLoadAssignment) ([]endpointSpec, error) {
	if cla == nil {
		return nil, nil
	}
	if err := cla.ValidateAll(); err != nil {
		return nil, err
	}
	if err := checkFields(cla.ProtoReflect(), claFields, ""); err != nil {
		return nil, err
	}
	eps, err := compileLocalities(cla.GetEndpoints(), kindEDS, "")
	if err != nil {
		return nil, err
	}
	seen := make(map[string]bool, len(eps))
	out := eps[:0]
	for _, ep := range eps {
		k := ep.key()
		if seen[k] {
			continue
		}
		seen[k] = true
		out = append(out, ep)
	}
	return out, nil
}

// SetEndpoints replaces the hosts of the EDS cluster name with cla's
// endpoints; a nil cla means no endpoints (Envoy's initial_fetch_timeout
// fired without an assignment). The first call makes the cluster ready:
// until then RoundTrip and Dial wait.
//
// The update is applied in place: a host whose address is still present
// keeps its object, connection pool and counters, and takes its weight,
// health_status, locality and hostname from cla; a host that left has its
// idle pooled connections closed; new hosts get a pool. Requests in flight
// and Dial'ed connections are never cut. membership_change counts updates
// that added or removed hosts.
//
// cla.cluster_name must be the cluster's EDS service name (EDSServiceName),
// as Envoy requires. On error nothing changes; the error names the field
// inside the ClusterLoadAssignment, e.g. `upstream: cluster "c":
// endpoints[0].lb_endpoints[1].endpoint.address.socket_address.address:
// malformed IP address: x`. It is also an error when no cluster of that name
// is registered or when it is not of type EDS.
//
// Manager.Add of a changed EDS cluster starts the new Cluster without
// endpoints, so callers call SetEndpoints right after such an Add.
func (m *Manager) SetEndpoints(name string, cla *endpointv3.ClusterLoadAssignment) error {
	// m.mu keeps Add and Remove from replacing the cluster meanwhile, so the
	// endpoints cannot land on a cluster that was just retired.
	m.mu.Lock()
	defer m.mu.Unlock()
	c := m.clusters[name]
	if c == nil {
		return fmt.Errorf("upstream: cluster %q: no such cluster", name)
	}
	if c.s.kind != kindEDS {
		return fmt.Errorf("upstream: cluster %q: endpoints can only be set on an EDS cluster, this one is %s",
			name, c.proto.GetType())
	}
	eps, err := compileCLA(cla)
	if err == nil && cla != nil && cla.GetClusterName() != c.s.edsServiceName {
		err = fmt.Errorf("cluster_name: %q is not the cluster's EDS service name %q", cla.GetClusterName(), c.s.edsServiceName)
	}
	if err != nil {
		return fmt.Errorf("upstream: cluster %q: %w", name, err)
	}
	c.setEndpoints(eps)
	return nil
}

// EDSServiceName is the name under which the cluster's endpoints are
// requested over EDS: eds_cluster_config.service_name, or the cluster's
// name when that is empty. It is "" for clusters that are not of type EDS.
func (c *Cluster) EDSServiceName() string { return c.s.edsServiceName }

// setEndpoints applies compiled EDS endpoints in place (see SetEndpoints).
func (c *Cluster) setEndpoints(eps []endpointSpec) {
	c.mu.Lock()
	cur := make(map[string]*host, len(c.edsHosts))
	for _, h := range c.edsHosts {
		cur[h.key] = h
	}
	changed := len(eps) != len(c.edsHosts)
	hosts := make([]*host, 0, len(eps))
	for i := range eps {
		ep := &eps[i]
		a := attrsOf(ep)
		h := cur[ep.key()]
		switch {
		case h == nil:
			h = c.newSpecHost(ep)
			changed = true
		case !h.attr().equal(a):
			h.attrs.Store(a)
			changed = true
		}
		changed = changed || i >= len(c.edsHosts) || c.edsHosts[i] != h
		hosts = append(hosts, h)
	}
	first := !c.edsReceived
	if changed || first {
		c.edsHosts = hosts
		c.publishLocked() // closes the idle connections of hosts that left
	}
	done := false
	if first {
		c.edsReceived = true
		c.waiting--
		done = c.waiting == 0
	}
	c.mu.Unlock()
	if done {
		close(c.ready)
	}
	c.log.Debug("eds endpoints set", "hosts", len(hosts), "changed", changed)
}
