package upstream

import (
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"

	"github.com/hopproxy/hop/pkg/h2wire"
	"github.com/hopproxy/hop/pkg/stats"
)

// clusterStats are the cluster.<name>.* stats, created once per Cluster;
// the same names resolve to the same stats across config versions. The
// ssl.* counters exist only for TLS clusters, the http2.* ones only for
// clusters that may speak HTTP/2.
type clusterStats struct {
	cxTotal, cxConnectFail, cxConnectTimeout, cxDestroy, cxNoneHealthy *stats.Counter
	cxRxBytes, cxTxBytes                                               *stats.Counter
	rqTotal, rqTimeout                                                 *stats.Counter
	membershipChange, lbHealthyPanic                                   *stats.Counter
	cxActive, rqActive, membershipTotal, membershipHealthy             *stats.Gauge
	cxHTTP1, cxHTTP2                                                   *stats.Counter
	sslHandshake, sslConnectionError, sslFailVerifyError               *stats.Counter
	h2Codec                                                            h2wire.Counters
	h2KeepaliveTimeout                                                 *stats.Counter
	odHostInvalid                                                      *stats.Counter // ORIGINAL_DST clusters only
}

func newClusterStats(st *stats.Store, s *settings) clusterStats {
	sc := st.Tagged("cluster", s.statName, "envoy_cluster_name")
	cs := clusterStats{
		cxTotal:           sc.Counter("upstream_cx_total"),
		cxConnectFail:     sc.Counter("upstream_cx_connect_fail"),
		cxConnectTimeout:  sc.Counter("upstream_cx_connect_timeout"),
		cxDestroy:         sc.Counter("upstream_cx_destroy"),
		cxNoneHealthy:     sc.Counter("upstream_cx_none_healthy"),
		cxRxBytes:         sc.Counter("upstream_cx_rx_bytes_total"),
		cxTxBytes:         sc.Counter("upstream_cx_tx_bytes_total"),
		rqTotal:           sc.Counter("upstream_rq_total"),
		rqTimeout:         sc.Counter("upstream_rq_timeout"),
		membershipChange:  sc.Counter("membership_change"),
		lbHealthyPanic:    sc.Counter("lb_healthy_panic"),
		cxActive:          sc.Gauge("upstream_cx_active"),
		rqActive:          sc.Gauge("upstream_rq_active"),
		membershipTotal:   sc.Gauge("membership_total"),
		membershipHealthy: sc.Gauge("membership_healthy"),
		cxHTTP1:           sc.Counter("upstream_cx_http1_total"),
		cxHTTP2:           sc.Counter("upstream_cx_http2_total"),
	}
	if s.mode != modeHTTP1 { // Envoy's codec stats, for clusters that may speak HTTP/2
		h2 := sc.Sub("http2")
		cs.h2Codec = h2wire.Counters{
			RxReset:       h2.Counter("rx_reset"),
			TxReset:       h2.Counter("tx_reset"),
			GoAwaySent:    h2.Counter("goaway_sent"),
			StreamRefused: h2.Counter("stream_refused_errors"),
		}
		cs.h2KeepaliveTimeout = h2.Counter("keepalive_timeout")
	}
	if s.kind == kindOriginalDst {
		cs.odHostInvalid = sc.Counter("original_dst_host_invalid")
	}
	if s.tls != nil { // as Envoy, which creates them with the TLS context
		ssl := sc.Sub("ssl")
		cs.sslHandshake = ssl.Counter("handshake")
		cs.sslConnectionError = ssl.Counter("connection_error")
		cs.sslFailVerifyError = ssl.Counter("fail_verify_error")
	}
	return cs
}

// Cluster is one compiled, running cluster. It is safe for concurrent use.
// Create it with Manager.Add.
type Cluster struct {
	// Immutable after newCluster.
	proto   *clusterv3.Cluster
	s       *settings
	log     *slog.Logger
	st      clusterStats
	resolve Resolver
	dialer  net.Dialer
	// internalDial opens connections to internal listeners
	// (Options.InternalDial); nil when there are none.
	internalDial InternalDialer

	// Lifetime. ctx ends DNS resolution and is cancelled by retire; wg
	// counts DNS goroutines. dialCtx ends connection attempts and is
	// cancelled only when the cluster is removed (not when it is replaced,
	// so that streams still holding it can connect). ready is closed once
	// every DNS name has had its first answer (success or failure) and, for
	// EDS, once SetEndpoints was first called; at once when there is none of
	// either. Until then chooseHost waits, which stands in for Envoy's
	// cluster warming.
	ctx        context.Context
	cancel     context.CancelFunc
	dialCtx    context.Context
	dialCancel context.CancelFunc
	wg         sync.WaitGroup
	ready      chan struct{}
	retired    atomic.Bool

	// set is the published host set: written under mu, read lock-free.
	set atomic.Pointer[hostSet]

	mu          sync.Mutex   // serialises host set rebuilds; guards the fields below
	targets     []*dnsTarget // one per lb_endpoint, config order
	edsHosts    []*host      // EDS: the hosts of the last SetEndpoints, in its order
	edsReceived bool         // EDS: SetEndpoints has been called
	waiting     int          // DNS targets still waiting for their first answer, +1 for EDS until SetEndpoints
	odList      []*host      // ORIGINAL_DST: the current hosts, in creation order

	// odHosts maps an ORIGINAL_DST destination (netip.AddrPort) to its
	// *host: read lock-free by chooseOriginalDst, written under mu along
	// with odList.
	odHosts sync.Map
}

func newCluster(pb *clusterv3.Cluster, s *settings, st *stats.Store, log *slog.Logger, resolve Resolver, internalDial InternalDialer) *Cluster {
	ctx, cancel := context.WithCancel(context.Background())
	dialCtx, dialCancel := context.WithCancel(context.Background())
	c := &Cluster{
		dialCtx:      dialCtx,
		dialCancel:   dialCancel,
		proto:        pb,
		s:            s,
		log:          log.With("cluster", s.name),
		st:           newClusterStats(st, s),
		resolve:      resolve,
		internalDial: internalDial,
		ctx:          ctx,
		cancel:       cancel,
		ready:        make(chan struct{}),
	}
	// KeepAlive -1: no TCP keep-alive unless tcp_keepalive enables it, as in Envoy.
	c.dialer = net.Dialer{KeepAlive: -1, KeepAliveConfig: s.keepAlive}
	if s.localAddr != nil { // a typed nil *net.TCPAddr would not be a nil net.Addr
		c.dialer.LocalAddr = s.localAddr
	}
	for i := range s.endpoints {
		t := &dnsTarget{spec: &s.endpoints[i]}
		if t.spec.needsDNS() {
			c.waiting++
		} else { // an IP literal or an internal address needs no resolution
			t.hosts = []*host{c.newSpecHost(t.spec)}
		}
		c.targets = append(c.targets, t)
	}
	if s.kind == kindEDS {
		c.waiting++ // until the first SetEndpoints
	}
	c.mu.Lock()
	c.publishLocked()
	c.mu.Unlock()
	return c
}

// start launches the DNS goroutines. Called once, after the cluster is
// registered.
func (c *Cluster) start() {
	c.mu.Lock()
	c.publishLocked() // the gauges may have been written by a retired predecessor
	c.mu.Unlock()
	if c.s.kind == kindOriginalDst {
		c.wg.Add(1)
		go c.cleanupLoop()
	}
	if c.waiting == 0 {
		close(c.ready)
		return
	}
	for _, t := range c.targets {
		if t.spec.needsDNS() {
			c.wg.Add(1)
			go c.resolveLoop(t)
		}
	}
}

// retire stops DNS resolution, waits for its goroutines and closes idle
// pooled connections. Requests in flight and Dial'ed connections continue;
// connections they return to the pool are closed when their response ends.
// A replaced cluster can still open connections for callers that hold it;
// a removed one (removed true) cannot, and connects in progress fail.
func (c *Cluster) retire(removed bool) {
	c.retired.Store(true)
	if removed {
		c.dialCancel()
	}
	c.cancel()
	c.wg.Wait()
	for _, h := range c.set.Load().hosts {
		h.removed.Store(true)
		h.closeIdle()
	}
}

// newSpecHost makes the host of a resolved endpoint: an IP literal or an
// internal address.
func (c *Cluster) newSpecHost(ep *endpointSpec) *host {
	return c.newHost(ep.key(), netip.AddrPortFrom(ep.ip, ep.port), ep.internal, attrsOf(ep))
}

// newHost makes a host with its connection pool.
func (c *Cluster) newHost(key string, ap netip.AddrPort, internal string, a *hostAttrs) *host {
	h := newHost(key, ap, internal, a)
	h.pool = c.newPool(h)
	if c.s.mode != modeHTTP1 {
		h.h2 = c.newH2Pool(h)
	}
	return h
}

// publishLocked rebuilds and publishes the host set from every target's
// current hosts and the EDS hosts, reading the hosts' current attributes.
// membership_change counts a set that gained or lost a host, as Envoy
// counts updates with hosts added or removed. Callers hold mu.
func (c *Cluster) publishLocked() {
	hosts := make([]*host, 0, len(c.targets)+len(c.edsHosts)+len(c.odList))
	for _, t := range c.targets {
		hosts = append(hosts, t.hosts...)
	}
	hosts = append(hosts, c.edsHosts...)
	hosts = append(hosts, c.odList...)
	hs := newHostSet(hosts, c.s.lb, c.s.panicThreshold)
	if old := c.set.Swap(hs); old != nil && !sameHostSet(old.hosts, hosts) {
		c.st.membershipChange.Inc()
		kept := make(map[*host]bool, len(hosts))
		for _, h := range hosts {
			kept[h] = true
		}
		for _, h := range old.hosts {
			if !kept[h] { // Envoy drains a removed host's pool
				h.removed.Store(true)
				h.closeIdle()
			}
		}
	}
	c.st.membershipTotal.Set(int64(len(hosts)))
	c.st.membershipHealthy.Set(int64(hs.healthy))
}

// chooseHost waits for the first DNS answers (or EDS assignment), then asks
// the load balancer.
func (c *Cluster) chooseHost(ctx context.Context) (*host, error) {
	if c.s.kind == kindOriginalDst {
		return c.chooseOriginalDst(ctx)
	}
	select {
	case <-c.ready:
	default:
		select {
		case <-c.ready:
		case <-c.ctx.Done():
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	hs := c.set.Load()
	if hs.pick == nil {
		c.st.cxNoneHealthy.Inc()
		return nil, ErrNoHealthyUpstream
	}
	if hs.panic {
		c.st.lbHealthyPanic.Inc()
	}
	return hs.pick.pick(), nil
}

// CountTimeout counts one upstream_rq_timeout: the router's route timeout
// fired on a request to this cluster (Envoy counts it in the router).
func (c *Cluster) CountTimeout() { c.st.rqTimeout.Inc() }

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.s.name }

// Proto is the cluster as configured. Callers must not modify it.
func (c *Cluster) Proto() *clusterv3.Cluster { return c.proto }

// Ready is closed once every DNS name of the cluster has had its first
// answer, and for an EDS cluster once Manager.SetEndpoints was first called
// (at once for STATIC clusters). RoundTrip and Dial wait for it.
func (c *Cluster) Ready() <-chan struct{} { return c.ready }

// Hosts lists the current hosts with their counters, for admin.
func (c *Cluster) Hosts() []HostInfo {
	hs := c.set.Load()
	out := make([]HostInfo, len(hs.hosts))
	for i, h := range hs.hosts {
		out[i] = h.info()
	}
	return out
}
