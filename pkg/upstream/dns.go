package upstream

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
)

// Resolver looks up the addresses of a hostname. network is "ip", "ip4" or
// "ip6", as for net.Resolver.LookupNetIP, which is the default. It must
// return promptly when ctx is cancelled. A *net.DNSError with IsNotFound is
// an answer with no addresses, not a failure.
type Resolver func(ctx context.Context, network, host string) ([]netip.Addr, error)

// dnsQueryTimeout bounds one lookup.
const dnsQueryTimeout = 5 * time.Second

// dnsTarget is one lb_endpoint. An IP literal has its host from the start;
// a hostname (STRICT_DNS, LOGICAL_DNS) gets hosts from a resolveLoop.
type dnsTarget struct {
	spec  *endpointSpec // immutable
	hosts []*host       // current hosts from the last good answer; guarded by Cluster.mu
}

// resolveLoop owns the resolution of one target: it resolves, publishes,
// and waits dns_refresh_rate (plus jitter), or the failure backoff, until
// the cluster is retired.
func (c *Cluster) resolveLoop(t *dnsTarget) {
	defer c.wg.Done()
	failures := 0
	first := true
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		addrs, err := c.lookup(t.spec.address)
		if c.ctx.Err() != nil {
			return
		}
		if err != nil {
			failures++
			level := slog.LevelDebug
			if failures == 1 { // warn once per run of failures
				level = slog.LevelWarn
			}
			c.log.Log(c.ctx, level, "dns resolution failed; keeping the last good hosts",
				"hostname", t.spec.address, "failures", failures, "error", err)
		} else {
			failures = 0
			c.applyAnswer(t, addrs)
		}
		if first {
			first = false
			c.targetAnswered()
		}
		timer.Reset(c.nextResolve(failures))
		select {
		case <-c.ctx.Done():
			return
		case <-timer.C:
		}
	}
}

// nextResolve is dns_refresh_rate plus up to dns_jitter after a success,
// and the dns_failure_refresh_rate backoff after failures.
func (c *Cluster) nextResolve(failures int) time.Duration {
	d := c.s.dnsRefresh
	if failures > 0 && c.s.dnsFailureBase > 0 {
		d = c.s.dnsFailureBase
		for i := 1; i < failures && d < c.s.dnsFailureMax; i++ {
			d *= 2
		}
		return min(d, c.s.dnsFailureMax)
	}
	if c.s.dnsJitter > 0 {
		d += rand.N(c.s.dnsJitter)
	}
	return d
}

func (c *Cluster) targetAnswered() {
	c.mu.Lock()
	c.waiting--
	done := c.waiting == 0
	c.mu.Unlock()
	if done {
		close(c.ready)
	}
}

// lookup resolves name for the cluster's dns_lookup_family.
func (c *Cluster) lookup(name string) ([]netip.Addr, error) {
	ctx, cancel := context.WithTimeout(c.ctx, dnsQueryTimeout)
	defer cancel()
	network := "ip"
	switch c.s.family {
	case clusterv3.Cluster_V4_ONLY:
		network = "ip4"
	case clusterv3.Cluster_V6_ONLY:
		network = "ip6"
	}
	addrs, err := c.resolve(ctx, network, name)
	if err != nil {
		var de *net.DNSError
		if errors.As(err, &de) && de.IsNotFound {
			return nil, nil // as Envoy's dns_nodata_noname_is_success
		}
		return nil, err
	}
	return pickFamily(c.s.family, addrs), nil
}

// pickFamily applies dns_lookup_family to an answer: AUTO prefers IPv6 and
// falls back to IPv4, V4_PREFERRED the reverse, ALL keeps both in answer
// order, the *_ONLY families drop the other family. Duplicates are dropped.
func pickFamily(family clusterv3.Cluster_DnsLookupFamily, addrs []netip.Addr) []netip.Addr {
	var v4, v6, all []netip.Addr
	seen := make(map[netip.Addr]bool, len(addrs))
	for _, a := range addrs {
		a = a.Unmap()
		if !a.IsValid() || seen[a] {
			continue
		}
		seen[a] = true
		all = append(all, a)
		if a.Is4() {
			v4 = append(v4, a)
		} else {
			v6 = append(v6, a)
		}
	}
	switch family {
	case clusterv3.Cluster_V4_ONLY:
		return v4
	case clusterv3.Cluster_V6_ONLY:
		return v6
	case clusterv3.Cluster_V4_PREFERRED:
		if len(v4) > 0 {
			return v4
		}
		return v6
	case clusterv3.Cluster_ALL:
		return all
	default: // AUTO
		if len(v6) > 0 {
			return v6
		}
		return v4
	}
}

// applyAnswer turns an answer into the target's hosts and republishes when
// they changed. A STRICT_DNS target gets one host per address, reusing the
// host (and its counters) of an address it already had. A LOGICAL_DNS
// target has one host, created on the first non-empty answer, whose address
// becomes the answer's first address; an empty answer keeps it.
func (c *Cluster) applyAnswer(t *dnsTarget, addrs []netip.Addr) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.s.kind == kindLogicalDNS {
		if len(addrs) == 0 {
			return
		}
		ap := netip.AddrPortFrom(addrs[0], t.spec.port)
		if len(t.hosts) == 1 {
			if *t.hosts[0].addr.Load() != ap {
				t.hosts[0].addr.Store(&ap)
				c.log.Debug("logical dns address changed", "hostname", t.spec.address, "address", ap.String())
			}
			return
		}
		key := net.JoinHostPort(t.spec.address, strconv.Itoa(int(t.spec.port)))
		t.hosts = []*host{c.newHostFromDNS(key, ap, t.spec)}
		c.publishLocked()
		return
	}
	old := make(map[string]*host, len(t.hosts))
	for _, h := range t.hosts {
		old[h.key] = h
	}
	hosts := make([]*host, 0, len(addrs))
	for _, a := range addrs {
		ap := netip.AddrPortFrom(a, t.spec.port)
		key := ap.String()
		h := old[key]
		if h == nil {
			h = c.newHostFromDNS(key, ap, t.spec)
		}
		hosts = append(hosts, h)
	}
	if sameHostSet(t.hosts, hosts) {
		return // the same addresses, perhaps reordered: nothing changed
	}
	t.hosts = hosts
	c.publishLocked()
	if c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("dns hosts changed", "hostname", t.spec.address, "hosts", len(hosts))
	}
}

// newHostFromDNS makes a host for a resolved address; without an explicit
// endpoint.hostname, the DNS name is reported as the hostname.
func (c *Cluster) newHostFromDNS(key string, ap netip.AddrPort, spec *endpointSpec) *host {
	a := attrsOf(spec)
	if a.hostname == "" {
		a.hostname = spec.address
	}
	return c.newHost(key, ap, "", a)
}

func defaultResolver(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return net.DefaultResolver.LookupNetIP(ctx, network, host)
}

// sameHostSet reports whether a and b hold the same hosts in any order.
func sameHostSet(a, b []*host) bool {
	if len(a) != len(b) {
		return false
	}
	in := make(map[*host]bool, len(a))
	for _, h := range a {
		in[h] = true
	}
	for _, h := range b {
		if !in[h] {
			return false
		}
	}
	return true
}
