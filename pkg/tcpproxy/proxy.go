package tcpproxy

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"

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
// max_downstream_connection_duration also counts from the start and cuts
// the connection, connecting or spliced, counting
// max_downstream_connection_duration.
//
// With tunneling_config the upstream side is an HTTP tunnel (see the
// package comment) and info feeds the formats of its request.
//
// onClose (may be nil) runs once when the downstream connection is gone,
// whoever ended it. On any failure down is closed (Envoy closes without
// sending anything).
func (c *Config) Serve(ctx context.Context, env Env, owner any, down net.Conn, info Downstream, onClose func()) {
	c.stats.cxTotal.Inc()
	var deadline time.Time
	if c.maxDuration > 0 {
		deadline = time.Now().Add(c.maxDurationFor(draw))
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadlineCause(ctx, deadline, errMaxDuration)
		defer cancel()
	}
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
	opt := tunnel.Options{IdleTimeout: c.idle, Deadline: deadline}
	if c.tunnel != nil {
		c.serveTunnel(ctx, env, owner, down, info, cl, opt, finish)
		return
	}
	up, err := c.connect(ctx, cl)
	if err != nil {
		c.logf(env, "tcp_proxy: upstream connection failed", "cluster", cl.Name(), "error", err)
		down.Close()
		finish()
		return
	}
	env.Tunnels.Go(owner, down, up, nil, nil, opt, func(res tunnel.Result) {
		// a = downstream, b = upstream.
		c.countEnd(res)
		up.CountBytes(res.BtoA, res.AtoB)
		finish()
	})
}

// errMaxDuration is the cause of a connect phase cut by
// max_downstream_connection_duration.
var errMaxDuration = errors.New("tcp_proxy: max_downstream_connection_duration reached")

// countEnd counts an ended tunnel in the tcp.<prefix> stats (a is the
// downstream).
func (c *Config) countEnd(res tunnel.Result) {
	c.stats.rxBytes.Add(uint64(res.AtoB))
	c.stats.txBytes.Add(uint64(res.BtoA))
	switch res.Cause {
	case tunnel.CauseIdleTimeout:
		c.stats.idleTimeout.Inc()
	case tunnel.CauseDeadline:
		c.stats.maxDuration.Inc()
	}
}

// countConnectTimeout counts a connect phase that ctx cut short: by the
// idle timeout or by max_downstream_connection_duration.
func (c *Config) countConnectTimeout(ctx context.Context) {
	switch {
	case errors.Is(context.Cause(ctx), errMaxDuration):
		c.stats.maxDuration.Inc()
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		c.stats.idleTimeout.Inc()
	}
}

// connect dials cl up to maxAttempts times. A connect failure (refused,
// timeout) is retried, at once or after backoff_options' wait; no healthy
// host is not, as in Envoy.
// Exhausting the attempts counts the cluster's
// upstream_cx_connect_attempts_exceeded.
func (c *Config) connect(ctx context.Context, cl *upstream.Cluster) (*upstream.Conn, error) {
	if c.idle > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.idle)
		defer cancel()
	}
	var err error
	for attempt := range c.maxAttempts {
		if attempt > 0 {
			if werr := c.backoff.wait(ctx, attempt-1); werr != nil {
				c.countConnectTimeout(ctx)
				return nil, err
			}
		}
		var up *upstream.Conn
		up, err = cl.Dial(ctx)
		if err == nil {
			return up, nil
		}
		if ctx.Err() != nil {
			c.countConnectTimeout(ctx)
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
