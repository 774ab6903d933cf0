package tcpproxy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"

	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// Env is what a proxied connection needs from the rest of the data plane.
// Clusters and Tunnels are required; Log may be nil.
type Env struct {
	Clusters *upstream.Manager
	Tunnels  *tunnel.Tracker
	Log      *slog.Logger
}

// Serve proxies one downstream connection (after its TLS handshake, if the
// chain terminates TLS): it picks the cluster, connects with up to
// max_connect_attempts tries, then hands both connections to env.Tunnels,
// tagged with owner (the listener), and returns. It blocks only while
// connecting; ctx cuts the connecting short (shutdown).
//
// The idle timeout runs from the start, as Envoy's does: a connect phase
// longer than it ends the connection and counts idle_timeout.
//
// With tunneling_config the upstream side is an HTTP tunnel (see the
// package comment) and info feeds the formats of its request.
//
// onClose (may be nil) runs once when the downstream connection is gone,
// whoever ended it. On any failure down is closed (Envoy closes without
// sending anything).
func (c *Config) Serve(ctx context.Context, env Env, owner any, down net.Conn, info Downstream, onClose func()) {
	c.stats.cxTotal.Inc()
	finish := func() {
		if onClose != nil {
			onClose()
		}
	}
	cl := env.Clusters.Get(c.pick())
	if cl == nil {
		c.stats.noRoute.Inc()
		down.Close()
		finish()
		return
	}
	if c.tunnel != nil {
		c.serveTunnel(ctx, env, owner, down, info, cl, finish)
		return
	}
	up, err := c.connect(ctx, cl)
	if err != nil {
		c.logf(env, "tcp_proxy: upstream connection failed", "cluster", cl.Name(), "error", err)
		down.Close()
		finish()
		return
	}
	env.Tunnels.Go(owner, down, up, nil, nil, tunnel.Options{IdleTimeout: c.idle}, func(res tunnel.Result) {
		// a = downstream, b = upstream.
		c.stats.rxBytes.Add(uint64(res.AtoB))
		c.stats.txBytes.Add(uint64(res.BtoA))
		up.CountBytes(res.BtoA, res.AtoB)
		if res.Cause == tunnel.CauseIdleTimeout {
			c.stats.idleTimeout.Inc()
		}
		finish()
	})
}

// connect dials cl up to maxAttempts times. A connect failure (refused,
// timeout) is retried at once; no healthy host is not, as in Envoy.
// Exhausting the attempts counts the cluster's
// upstream_cx_connect_attempts_exceeded.
func (c *Config) connect(ctx context.Context, cl *upstream.Cluster) (*upstream.Conn, error) {
	if c.idle > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.idle)
		defer cancel()
	}
	var err error
	for range c.maxAttempts {
		var up *upstream.Conn
		up, err = cl.Dial(ctx)
		if err == nil {
			return up, nil
		}
		if ctx.Err() != nil {
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				c.stats.idleTimeout.Inc()
			}
			return nil, err
		}
		var ce *upstream.ConnectError
		if !errors.As(err, &ce) {
			return nil, err // no healthy upstream: counted by the cluster
		}
	}
	c.attemptsExceeded(cl).Inc()
	return nil, err
}

// pick chooses the cluster of one connection: the only one, or one of
// weighted_clusters with probability weight/total.
func (c *Config) pick() string {
	if len(c.clusters) == 1 {
		return c.clusters[0].name
	}
	r := rand.Uint32N(c.totalWeight)
	for _, w := range c.clusters {
		if r < w.weight {
			return w.name
		}
		r -= w.weight
	}
	return c.clusters[len(c.clusters)-1].name // unreachable
}

func (c *Config) logf(env Env, msg string, args ...any) {
	if env.Log != nil {
		env.Log.Debug(msg, args...)
	}
}
