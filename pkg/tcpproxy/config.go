// Package tcpproxy is Envoy's envoy.filters.network.tcp_proxy network
// filter: every downstream connection of a filter chain is proxied, bytes
// as they are, to a connection opened to a cluster (cluster or
// weighted_clusters), with idle_timeout, max_connect_attempts (and
// backoff_options between them) and max_downstream_connection_duration
// (with its jitter).
//
// Compile turns a TcpProxy proto into an immutable Config once per
// snapshot; Config.Serve proxies one accepted connection. The splice runs
// on a tunnel.Tracker, tagged with the listener, so that drains and
// shutdown can cut it like any other tunnel.
//
// With tunneling_config the bytes ride an HTTP request to the cluster
// instead of a raw connection, as Envoy's HttpUpstream: an HTTP/1.1
// CONNECT (or chunked POST) on a connection of its own, or an HTTP/2
// CONNECT (or POST) stream multiplexed with other tunnels on the
// cluster's shared connections. The request's hostname and headers are
// substitution formats (pkg/format) evaluated per connection. The
// downstream is not read until the upstream accepted the tunnel (any 2xx
// on HTTP/1.1, exactly 200 on HTTP/2); a refusal counts as a connect
// failure and is retried up to max_connect_attempts.
package tcpproxy

import (
	"errors"
	"fmt"
	"time"

	tcpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/hopproxy/hop/pkg/stats"
)

// ErrUnsupported is wrapped by every error about a populated field that
// hop does not implement.
var ErrUnsupported = errors.New("unsupported field")

// Envoy's defaults.
const (
	defaultIdleTimeout     = time.Hour
	defaultConnectAttempts = 1
)

// Config is one compiled TcpProxy. It is immutable after Compile and safe
// for concurrent use.
type Config struct {
	proto       *tcpv3.TcpProxy
	statPrefix  string
	clusters    []weighted // one entry (weight 0) for `cluster`
	totalWeight uint32     // sum of the weights; 0 with a single cluster
	idle        time.Duration
	maxDuration time.Duration // max_downstream_connection_duration; 0 = none
	maxJitter   float64       // max_downstream_connection_duration_jitter_percentage, 0–100
	maxAttempts int
	backoff     backoff    // backoff_options; zero: retry at once
	tunnel      *tunneling // nil without tunneling_config
	st          *stats.Store
	stats       proxyStats
}

// weighted is one cluster of weighted_clusters (or the only cluster).
type weighted struct {
	name   string
	weight uint32
}

// proxyStats are the tcp.<stat_prefix>.* stats hop keeps.
// upstream_flush_* exist for dashboards but stay 0: hop does not keep an
// upstream connection open to flush after the downstream has gone (and
// Envoy never counts them for HTTP tunnels).
type proxyStats struct {
	cxTotal, noRoute, rxBytes, txBytes, idleTimeout, flushTotal *stats.Counter
	maxDuration                                                 *stats.Counter
	flushActive                                                 *stats.Gauge
}

func newProxyStats(st *stats.Store, prefix string) proxyStats {
	sc := st.Tagged("tcp", prefix, "envoy_tcp_prefix")
	return proxyStats{
		cxTotal:     sc.Counter("downstream_cx_total"),
		noRoute:     sc.Counter("downstream_cx_no_route"),
		rxBytes:     sc.Counter("downstream_cx_rx_bytes_total"),
		txBytes:     sc.Counter("downstream_cx_tx_bytes_total"),
		idleTimeout: sc.Counter("idle_timeout"),
		flushTotal:  sc.Counter("upstream_flush_total"),
		maxDuration: sc.Counter("max_downstream_connection_duration"),
		flushActive: sc.Gauge("upstream_flush_active"),
	}
}

// accepted are the TcpProxy fields hop implements; any other populated
// field is rejected.
var accepted = map[protoreflect.Name]bool{
	"stat_prefix": true, "cluster": true, "weighted_clusters": true,
	"idle_timeout": true, "max_connect_attempts": true, "tunneling_config": true,
	"max_downstream_connection_duration": true, "max_downstream_connection_duration_jitter_percentage": true,
	"backoff_options": true,
}

// Compile checks p and compiles it. Errors name the field path and start
// with "tcp_proxy: ". st receives the stats (created at compile time, so
// they show at zero as Envoy's do).
func Compile(p *tcpv3.TcpProxy, st *stats.Store) (*Config, error) {
	if err := checkFields(p.ProtoReflect(), "", accepted); err != nil {
		return nil, err
	}
	if p.GetStatPrefix() == "" {
		return nil, fmt.Errorf("tcp_proxy: stat_prefix: must not be empty")
	}
	c := &Config{
		proto:       p,
		statPrefix:  p.GetStatPrefix(),
		idle:        defaultIdleTimeout,
		maxAttempts: defaultConnectAttempts,
		st:          st,
	}
	switch cs := p.GetClusterSpecifier().(type) {
	case *tcpv3.TcpProxy_Cluster:
		if cs.Cluster == "" {
			return nil, fmt.Errorf("tcp_proxy: cluster: must not be empty")
		}
		c.clusters = []weighted{{name: cs.Cluster}}
	case *tcpv3.TcpProxy_WeightedClusters:
		wc := cs.WeightedClusters.GetClusters()
		if len(wc) == 0 {
			return nil, fmt.Errorf("tcp_proxy: weighted_clusters.clusters: at least one cluster is required")
		}
		for i, w := range wc {
			path := fmt.Sprintf("weighted_clusters.clusters[%d]", i)
			if err := checkFields(w.ProtoReflect(), path+".", map[protoreflect.Name]bool{"name": true, "weight": true}); err != nil {
				return nil, err
			}
			if w.GetName() == "" {
				return nil, fmt.Errorf("tcp_proxy: %s.name: must not be empty", path)
			}
			if w.GetWeight() < 1 {
				return nil, fmt.Errorf("tcp_proxy: %s.weight: must be at least 1", path)
			}
			if uint64(c.totalWeight)+uint64(w.GetWeight()) > 1<<32-1 {
				return nil, fmt.Errorf("tcp_proxy: weighted_clusters: the weights add up to more than 2^32-1")
			}
			c.totalWeight += w.GetWeight()
			c.clusters = append(c.clusters, weighted{name: w.GetName(), weight: w.GetWeight()})
		}
	default:
		return nil, fmt.Errorf("tcp_proxy: cluster_specifier: one of cluster or weighted_clusters is required")
	}
	if d := p.GetIdleTimeout(); d != nil {
		if !d.IsValid() || d.AsDuration() < 0 {
			return nil, fmt.Errorf("tcp_proxy: idle_timeout: invalid duration")
		}
		c.idle = d.AsDuration() // 0 disables it
	}
	if d := p.GetMaxDownstreamConnectionDuration(); d != nil {
		if !d.IsValid() || d.AsDuration() < time.Millisecond {
			return nil, fmt.Errorf("tcp_proxy: max_downstream_connection_duration: must be at least 1ms")
		}
		c.maxDuration = d.AsDuration()
	}
	if j := p.GetMaxDownstreamConnectionDurationJitterPercentage(); j != nil {
		if v := j.GetValue(); v < 0 || v > 100 {
			return nil, fmt.Errorf("tcp_proxy: max_downstream_connection_duration_jitter_percentage: must be within 0 and 100")
		}
		c.maxJitter = j.GetValue()
	}
	var err error
	if c.backoff, err = compileBackoff(p); err != nil {
		return nil, err
	}
	if m := p.GetMaxConnectAttempts(); m != nil {
		if m.GetValue() < 1 {
			return nil, fmt.Errorf("tcp_proxy: max_connect_attempts: must be at least 1")
		}
		c.maxAttempts = int(min(m.GetValue(), 1<<16)) // keep a typo from looping for hours
	}
	if tc := p.GetTunnelingConfig(); tc != nil {
		if c.tunnel, err = compileTunneling(tc); err != nil {
			return nil, err
		}
	}
	c.stats = newProxyStats(st, c.statPrefix)
	return c, nil
}

// checkFields rejects any populated field of m not in ok.
func checkFields(m protoreflect.Message, prefix string, ok map[protoreflect.Name]bool) error {
	fields := m.Descriptor().Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if m.Has(fd) && !ok[fd.Name()] {
			return fmt.Errorf("tcp_proxy: %s%s: %w", prefix, fd.Name(), ErrUnsupported)
		}
	}
	if len(m.GetUnknown()) > 0 {
		return fmt.Errorf("tcp_proxy: %sunknown fields: %w", prefix, ErrUnsupported)
	}
	return nil
}

// Proto is the TcpProxy the Config was compiled from. Callers must not
// modify it.
func (c *Config) Proto() *tcpv3.TcpProxy { return c.proto }

// StatPrefix is the tcp.<prefix>. of the Config's stats.
func (c *Config) StatPrefix() string { return c.statPrefix }

// IdleTimeout is the compiled idle_timeout (0 = none).
func (c *Config) IdleTimeout() time.Duration { return c.idle }

// MaxConnectAttempts is the compiled max_connect_attempts.
func (c *Config) MaxConnectAttempts() int { return c.maxAttempts }

// UsesServerName reports whether serving a connection reads
// Downstream.ServerName (a tunneling format uses
// %REQUESTED_SERVER_NAME%), so that callers find the SNI only then.
func (c *Config) UsesServerName() bool { return c.tunnel != nil && c.tunnel.usesServerName }
