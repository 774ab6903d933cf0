package upstream

import (
	"errors"
	"log/slog"
	"sort"
	"sync"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"

	"github.com/hopproxy/hop/pkg/stats"
)

// Options tune a Manager. The zero value is what NewManager uses.
type Options struct {
	// Resolver resolves STRICT_DNS and LOGICAL_DNS hostnames. Nil means
	// net.DefaultResolver.LookupNetIP. Tests inject their own.
	Resolver Resolver

	// InternalDial connects to the internal listener of that name, for
	// endpoints with an envoy_internal_address (see InternalDialer). Nil
	// means there are no internal listeners: every such connection fails.
	InternalDial InternalDialer
}

// Manager owns every cluster of the process. It is safe for concurrent use.
type Manager struct {
	// Immutable after NewManager.
	st           *stats.Store
	log          *slog.Logger
	resolve      Resolver
	internalDial InternalDialer

	// mu serialises Add, Remove and Close (each may wait for a retired
	// cluster's DNS goroutines, which exit as soon as their context is
	// cancelled) and guards the fields below. Get and Clusters take it
	// briefly; the data path never does, since callers hold *Cluster.
	mu       sync.Mutex
	clusters map[string]*Cluster
	closed   bool
}

// NewManager returns an empty Manager that reports stats into st and logs
// to log (nil: discard).
func NewManager(st *stats.Store, log *slog.Logger) *Manager {
	return NewManagerWithOptions(st, log, Options{})
}

// NewManagerWithOptions is NewManager with options.
func NewManagerWithOptions(st *stats.Store, log *slog.Logger, opts Options) *Manager {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	resolve := opts.Resolver
	if resolve == nil {
		resolve = defaultResolver
	}
	return &Manager{
		st:           st,
		log:          log.With("component", "upstream"),
		resolve:      resolve,
		internalDial: opts.InternalDial,
		clusters:     map[string]*Cluster{},
	}
}

// Add compiles c and starts it (DNS resolution for STRICT_DNS and
// LOGICAL_DNS). If a cluster with the same name and an equal proto is
// already registered, Add returns it unchanged (an EDS cluster keeps its
// endpoints). If the name is registered with a different proto, the new
// cluster replaces it and the old one is retired (see the package doc); a
// new EDS cluster has no endpoints and is not ready until SetEndpoints, so
// the caller sets them right after Add. On error nothing changes; the error
// names the field, e.g. `upstream: cluster "foo":
// load_assignment.endpoints[0].lb_endpoints[1].endpoint.address: ...`.
func (m *Manager) Add(c *clusterv3.Cluster) (*Cluster, error) {
	s, err := compile(c)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, errors.New("upstream: manager is closed")
	}
	old := m.clusters[s.name]
	if old != nil && proto.Equal(old.proto, c) {
		return old, nil
	}
	nc := newCluster(proto.Clone(c).(*clusterv3.Cluster), s, m.st, m.log, m.resolve, m.internalDial)
	if s.kind == kindEDS && len(c.GetLoadAssignment().GetEndpoints()) > 0 {
		nc.log.Warn("load_assignment endpoints of an EDS cluster are ignored, as in Envoy; its endpoints come from EDS")
	}
	m.clusters[s.name] = nc
	if old != nil {
		old.retire(false)
	}
	nc.start()
	return nc, nil
}

// Remove retires the named cluster, if any: its DNS goroutines stop, its
// idle connections close and connection attempts through it fail;
// requests and tunnels in flight continue.
func (m *Manager) Remove(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c := m.clusters[name]; c != nil {
		delete(m.clusters, name)
		c.retire(true)
	}
}

// Get returns the named cluster, or nil.
func (m *Manager) Get(name string) *Cluster {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.clusters[name]
}

// Clusters lists the clusters sorted by name, for admin.
func (m *Manager) Clusters() []*Cluster {
	m.mu.Lock()
	out := make([]*Cluster, 0, len(m.clusters))
	for _, c := range m.clusters {
		out = append(out, c)
	}
	m.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name() < out[j].Name() })
	return out
}

// Close retires every cluster: DNS goroutines stop and idle connections
// close. Connections still in use close when their request ends; Dial'ed
// connections belong to their callers. Add fails after Close.
func (m *Manager) Close() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.closed = true
	for name, c := range m.clusters {
		delete(m.clusters, name)
		c.retire(true)
	}
}
