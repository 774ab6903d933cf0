package upstream

import (
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// hostAttrs are the attributes of a host that an EDS update may change
// without replacing the host. Immutable: a change stores a new value.
type hostAttrs struct {
	hostname string // endpoint.hostname (or the DNS name it came from)
	weight   uint32
	health   corev3.HealthStatus
	locality *corev3.Locality
}

func attrsOf(ep *endpointSpec) *hostAttrs {
	return &hostAttrs{hostname: ep.hostname, weight: ep.weight, health: ep.health, locality: ep.locality}
}

func (a *hostAttrs) equal(b *hostAttrs) bool {
	return a.hostname == b.hostname && a.weight == b.weight && a.health == b.health &&
		proto.Equal(a.locality, b.locality)
}

// healthy reports whether the host takes traffic outside panic mode: Envoy
// excludes hosts whose EDS health status is UNHEALTHY, DRAINING or TIMEOUT
// (and DEGRADED ones while healthy hosts remain).
func (a *hostAttrs) healthy() bool {
	return a.health == corev3.HealthStatus_UNKNOWN || a.health == corev3.HealthStatus_HEALTHY
}

// host is one upstream endpoint: for STATIC, STRICT_DNS and EDS one address
// (an internal listener's, for an envoy_internal_address), for LOGICAL_DNS
// the single logical host whose address follows DNS, for ORIGINAL_DST one
// destination seen in a request or connection.
//
// key is immutable after newHost; attrs is replaced (under Cluster.mu) when
// an EDS update changes a kept host's weight, health, locality or hostname,
// and is read lock-free; the counters are atomics written on the hot path.
// A host survives re-resolutions and EDS updates that keep its address, so
// its pool and counters do too.
type host struct {
	// key identifies the host and, but for internal hosts, is the address
	// RoundTrip puts in URL.Host: "ip:port", or "hostname:port" for a
	// LOGICAL_DNS host, whose pooled connections stay on the address they
	// were opened to; "envoy://<listener>/<endpoint_id>" for an internal
	// address.
	key   string
	attrs atomic.Pointer[hostAttrs]

	// addr is where new connections go. Fixed except for LOGICAL_DNS, where
	// the resolver goroutine stores each new first answer. Zero for an
	// internal host.
	addr atomic.Pointer[netip.AddrPort]

	// internal is the internal listener an envoy_internal_address names;
	// "" for a socket address. Immutable.
	internal string

	// used marks an ORIGINAL_DST host chosen since the last cleanup round.
	used atomic.Bool

	// pool is the host's HTTP/1.1 connection pool (nil only in unit tests of
	// the load balancer); h2 its HTTP/2 pool, nil when the cluster never
	// speaks HTTP/2. removed is set when the host leaves the cluster's host
	// set (or the cluster is retired): its idle connections are closed
	// then, and again whenever one of its requests ends.
	pool    *http.Transport
	h2      *h2Pool
	removed atomic.Bool

	// auto_config: alpnH1 is set while the host's last new connection
	// negotiated HTTP/1.1. handOff holds at most one such connection,
	// dialled by the HTTP/2 pool, for the HTTP/1.1 pool to take.
	alpnH1    atomic.Bool
	handOffMu sync.Mutex
	handOffPC *poolConn // guarded by handOffMu

	cxActive, rqActive atomic.Int64
	cxTotal, cxFail    atomic.Uint64
	rqTotal            atomic.Uint64
}

// newHost makes a host without a pool; Cluster.newHost adds one.
// internal, when not "", makes it the host of that internal listener.
func newHost(key string, ap netip.AddrPort, internal string, a *hostAttrs) *host {
	h := &host{key: key, internal: internal}
	h.attrs.Store(a)
	h.addr.Store(&ap)
	return h
}

// handOff parks pc for the HTTP/1.1 pool's next dial; false when the slot
// is taken.
func (h *host) handOff(pc *poolConn) bool {
	h.handOffMu.Lock()
	defer h.handOffMu.Unlock()
	if h.handOffPC != nil || h.removed.Load() {
		return false
	}
	h.handOffPC = pc
	return true
}

// takeHandOff returns the parked connection, if any.
func (h *host) takeHandOff() *poolConn {
	h.handOffMu.Lock()
	defer h.handOffMu.Unlock()
	pc := h.handOffPC
	h.handOffPC = nil
	return pc
}

// closeIdle closes the host's idle pooled connections, HTTP/1.1 and
// HTTP/2, and a parked hand-off connection.
func (h *host) closeIdle() {
	h.pool.CloseIdleConnections()
	if h.h2 != nil {
		h.h2.closeIdle()
	}
	if pc := h.takeHandOff(); pc != nil {
		pc.Close()
	}
}

// markUsed sets the ORIGINAL_DST used mark, writing only when it is unset
// so that busy hosts do not bounce a cache line between cores.
func (h *host) markUsed() {
	if !h.used.Load() {
		h.used.Store(true)
	}
}

// address is where the host's connections go, for admin and Conn:
// "ip:port", or the internal address.
func (h *host) address() string {
	if h.internal != "" {
		return h.key
	}
	return h.addr.Load().String()
}

// urlHost is what RoundTrip puts in URL.Host: the key, or for an internal
// host a placeholder that is a valid host name (net/http needs one; the
// request's own Host header is what goes on the wire).
func (h *host) urlHost() string {
	if h.internal != "" {
		return internalURLHost
	}
	return h.key
}

// attr returns the host's current attributes.
func (h *host) attr() *hostAttrs { return h.attrs.Load() }

// HostInfo describes one host for admin's /clusters.
type HostInfo struct {
	// Address is the "ip:port" new connections go to, or an internal
	// address "envoy://<listener>/<endpoint_id>".
	Address string
	// Hostname is the endpoint's hostname field, or the DNS name it was
	// resolved from.
	Hostname string
	// Weight is the endpoint's load_balancing_weight (default 1).
	Weight uint32
	// HealthStatus is the configured core.v3.HealthStatus ("UNKNOWN",
	// "HEALTHY", "UNHEALTHY", "DRAINING", "TIMEOUT", "DEGRADED").
	HealthStatus string
	// Healthy reports whether the host is chosen outside panic mode.
	Healthy bool
	// Region, Zone and SubZone come from the endpoint's locality.
	Region, Zone, SubZone string

	CxActive      int64  // open connections (pooled and Dial'ed)
	CxTotal       uint64 // connections attempted
	CxConnectFail uint64 // connection attempts that failed
	RqActive      int64  // requests in flight
	RqTotal       uint64 // requests sent
}

func (h *host) info() HostInfo {
	a := h.attr()
	hi := HostInfo{
		Address:       h.address(),
		Hostname:      a.hostname,
		Weight:        a.weight,
		HealthStatus:  a.health.String(),
		Healthy:       a.healthy(),
		Region:        a.locality.GetRegion(),
		Zone:          a.locality.GetZone(),
		SubZone:       a.locality.GetSubZone(),
		CxActive:      h.cxActive.Load(),
		CxTotal:       h.cxTotal.Load(),
		CxConnectFail: h.cxFail.Load(),
		RqActive:      h.rqActive.Load(),
		RqTotal:       h.rqTotal.Load(),
	}
	return hi
}

// hostSet is one published view of a cluster's hosts. Immutable once
// built, except for the picker's own balancing state: health and weights
// are read once, when it is built, so a later EDS update of a host's
// attributes takes effect through the next hostSet.
type hostSet struct {
	hosts   []*host // every host, configuration order
	healthy int     // hosts with healthy()
	panic   bool    // too few healthy hosts: pick ignores health
	pick    picker  // nil when there is nothing to choose
}

// newHostSet builds the view, deciding panic mode as Envoy's
// LoadBalancerBase::isHostSetInPanic does for a single priority: the
// percentage of healthy plus degraded hosts is below the threshold.
// Outside panic mode healthy hosts are used, or degraded ones when there is
// no healthy host (Envoy's finer degraded spill-over is not modelled).
func newHostSet(hosts []*host, lb lbKind, panicThreshold float64) *hostSet {
	hs := &hostSet{hosts: hosts}
	var healthy, degraded []*host
	for _, h := range hosts {
		switch a := h.attr(); {
		case a.healthy():
			healthy = append(healthy, h)
		case a.health == corev3.HealthStatus_DEGRADED:
			degraded = append(degraded, h)
		}
	}
	hs.healthy = len(healthy)
	candidates := healthy
	if len(hosts) > 0 && float64(len(healthy)+len(degraded))*100/float64(len(hosts)) < panicThreshold {
		hs.panic, candidates = true, hosts
	} else if len(candidates) == 0 {
		candidates = degraded
	}
	if len(candidates) > 0 && lb != lbClusterProvided { // ORIGINAL_DST picks by destination
		hs.pick = newPicker(lb, candidates)
	}
	return hs
}
