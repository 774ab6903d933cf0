package upstream

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Envoy's defaults for ORIGINAL_DST clusters (original_dst_cluster.cc).
const (
	defaultCleanupInterval    = 5 * time.Second
	defaultOriginalDstHeader  = "x-envoy-original-dst-host"
	originalDstAuthorityField = ":authority"
)

// originalDst is the compiled original_dst_lb_config and cleanup_interval
// of an ORIGINAL_DST cluster.
type originalDst struct {
	header       string // lower-case header naming the destination; "" without use_http_header
	portOverride uint16 // upstream_port_override, when hasPort
	hasPort      bool
	cleanup      time.Duration
}

// compileOriginalDst applies Envoy's rules for ORIGINAL_DST clusters: the
// cluster provides the load balancer (lb_policy CLUSTER_PROVIDED, and no
// other type may ask for it), has no load_assignment, and names a header
// only when use_http_header is set. original_dst_lb_config on another
// cluster type is ignored.
func compileOriginalDst(c *clusterv3.Cluster, s *settings) error {
	if s.kind != kindOriginalDst {
		if s.lb == lbClusterProvided {
			return fmt.Errorf("lb_policy: cluster manager: cluster provided LB specified but cluster '%s' did not provide one. Check cluster documentation.", s.name)
		}
		return nil
	}
	if s.lb != lbClusterProvided {
		return fmt.Errorf("lb_policy: cluster: LB policy %s is not valid for Cluster type ORIGINAL_DST. Only 'CLUSTER_PROVIDED' is allowed with cluster type 'ORIGINAL_DST'", c.GetLbPolicy())
	}
	if c.GetLoadAssignment() != nil {
		return errors.New("load_assignment: ORIGINAL_DST clusters must have no load assignment configured")
	}
	oc := c.GetOriginalDstLbConfig()
	if !oc.GetUseHttpHeader() && oc.GetHttpHeaderName() != "" {
		return fmt.Errorf("original_dst_lb_config.http_header_name: ORIGINAL_DST cluster: invalid config http_header_name=%s and use_http_header is false. Set use_http_header to true if http_header_name is desired.", oc.GetHttpHeaderName())
	}
	s.od.cleanup = durationOr(c.GetCleanupInterval(), defaultCleanupInterval)
	if oc.GetUseHttpHeader() {
		s.od.header = defaultOriginalDstHeader
		if n := oc.GetHttpHeaderName(); n != "" {
			s.od.header = strings.ToLower(n)
		}
	}
	if p := oc.GetUpstreamPortOverride(); p != nil {
		if p.GetValue() > 65535 {
			return fmt.Errorf("original_dst_lb_config.upstream_port_override: must be at most 65535, got %d", p.GetValue())
		}
		s.od.portOverride, s.od.hasPort = uint16(p.GetValue()), true
	}
	return nil
}

// destination works out where an ORIGINAL_DST request or connection goes,
// as Envoy's OriginalDstCluster::LoadBalancer::chooseHost: the header's
// "ip:port" (only the first value; a value that is not an IP address and
// port counts original_dst_host_invalid and is ignored, since Envoy never
// resolves names here), else the downstream connection's original
// destination; then upstream_port_override.
func (c *Cluster) destination(ctx context.Context) (netip.AddrPort, bool) {
	lc := lbContextFrom(ctx)
	if lc == nil {
		return netip.AddrPort{}, false
	}
	var ap netip.AddrPort
	if c.s.od.header != "" && lc.Header != nil {
		if v, ok := lc.Header(c.s.od.header); ok {
			if p, err := netip.ParseAddrPort(v); err == nil {
				ap = p
			} else {
				c.st.odHostInvalid.Inc()
				c.log.Debug("original_dst: invalid destination in header", "header", c.s.od.header, "value", v)
			}
		}
	}
	if !ap.IsValid() {
		ap = lc.DownstreamLocalAddr
	}
	if !ap.IsValid() {
		return netip.AddrPort{}, false
	}
	if c.s.od.hasPort {
		ap = netip.AddrPortFrom(ap.Addr(), c.s.od.portOverride)
	}
	return ap, true
}

// chooseOriginalDst returns the host for the context's destination,
// creating it on first use. Without a destination it fails as Envoy's
// load balancer returning no host does: upstream_cx_none_healthy and
// ErrNoHealthyUpstream (503 "no healthy upstream", or a closed tcp_proxy
// connection).
func (c *Cluster) chooseOriginalDst(ctx context.Context) (*host, error) {
	ap, ok := c.destination(ctx)
	if !ok {
		c.st.cxNoneHealthy.Inc()
		c.log.Debug("original_dst: no destination for the request or connection")
		return nil, ErrNoHealthyUpstream
	}
	if v, ok := c.odHosts.Load(ap); ok {
		if h := v.(*host); !h.removed.Load() || c.retired.Load() {
			h.markUsed()
			return h, nil
		}
	}
	return c.addOriginalDst(ap), nil
}

// addOriginalDst creates the host for ap (unless another caller just did)
// and publishes it, so it appears in Hosts and the membership stats. Its
// hostname is the cluster's name followed by the address, as Envoy names
// these hosts.
func (c *Cluster) addOriginalDst(ap netip.AddrPort) *host {
	c.mu.Lock()
	defer c.mu.Unlock()
	retired := c.retired.Load()
	if v, ok := c.odHosts.Load(ap); ok {
		if h := v.(*host); !h.removed.Load() || retired {
			h.markUsed()
			return h
		}
	}
	key := ap.String()
	h := c.newHost(key, ap, "", &hostAttrs{hostname: c.s.name + key, weight: 1})
	h.markUsed()
	if retired {
		// The cluster was replaced: serve the caller, keep no pool.
		h.removed.Store(true)
		return h
	}
	c.odHosts.Store(ap, h)
	c.odList = append(c.odList, h)
	c.publishLocked()
	c.log.Debug("original_dst: created host", "address", key)
	return h
}

// cleanupLoop removes unused ORIGINAL_DST hosts every cleanup_interval
// until the cluster is retired.
func (c *Cluster) cleanupLoop() {
	defer c.wg.Done()
	t := time.NewTicker(c.s.od.cleanup)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
			c.cleanupOriginalDst()
		}
	}
}

// cleanupOriginalDst is one round of Envoy's OriginalDstCluster::cleanup
// (with original_dst_rely_on_idle_timeout, its default): a host chosen
// since the last round stays, and loses its mark; an unmarked host stays
// while it has connections (pooled ones included, which idle_timeout
// closes) or requests; the others leave the cluster.
func (c *Cluster) cleanupOriginalDst() {
	c.mu.Lock()
	defer c.mu.Unlock()
	kept := make([]*host, 0, len(c.odList))
	removed := 0
	for _, h := range c.odList {
		if h.used.Swap(false) || h.cxActive.Load() > 0 || h.rqActive.Load() > 0 {
			kept = append(kept, h)
			continue
		}
		c.odHosts.Delete(*h.addr.Load())
		removed++
	}
	if removed == 0 {
		return
	}
	c.odList = kept
	c.publishLocked() // marks the hosts that left as removed
	c.log.Debug("original_dst: removed unused hosts", "removed", removed, "kept", len(kept))
}
