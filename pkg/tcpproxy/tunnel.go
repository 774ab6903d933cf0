package tcpproxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"

	"github.com/hopproxy/hop/pkg/tunnel"
	"github.com/hopproxy/hop/pkg/upstream"
)

// serveTunnel is Serve for a tcp_proxy with tunneling_config: the
// downstream bytes ride an HTTP CONNECT (or POST) stream to cl. Nothing is
// read from down before the tunnel is established, so the client's early
// bytes wait in the socket (Envoy's read-disable) and nothing reaches the
// upstream before its success response.
func (c *Config) serveTunnel(ctx context.Context, env Env, owner any, down net.Conn, info Downstream, cl *upstream.Cluster, opt tunnel.Options, finish func()) {
	s := newSession(down, info)
	up, hc, err := c.openTunnel(ctx, cl, s)
	if err != nil {
		c.logf(env, "tcp_proxy: tunnel failed", "cluster", cl.Name(), "error", err)
		down.Close()
		finish()
		return
	}
	env.Tunnels.Go(owner, down, up.Conn, nil, up.Buffered, opt, func(res tunnel.Result) {
		// a = downstream, b = upstream.
		c.countEnd(res)
		if hc != nil { // HTTP/1.1: the connection is the tunnel's own
			hc.CountBytes(res.BtoA, res.AtoB)
		}
		finish()
	})
}

// openTunnel establishes the tunnel with up to max_connect_attempts
// attempts. A failed connect, an upstream that closes or resets before
// answering, and a refused tunnel (not 200 on HTTP/2, not 2xx on
// HTTP/1.1, or a response that ends the stream) are connect failures and
// are retried on a new stream or connection, at once or after
// backoff_options' wait; no healthy upstream is not. The idle timeout (and
// max_downstream_connection_duration) bounds the whole phase (Envoy starts
// them with the connection) and counts when it fires. For HTTP/1.1 the
// Dial'ed connection is returned too, for its byte counters.
func (c *Config) openTunnel(ctx context.Context, cl *upstream.Cluster, s *session) (*tunnel.Upstream, *upstream.Conn, error) {
	if c.idle > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.idle)
		defer cancel()
	}
	h2 := cl.TunnelProtocol() == 2
	var err error
	for attempt := range c.maxAttempts {
		if attempt > 0 {
			if werr := c.backoff.wait(ctx, attempt-1); werr != nil {
				c.countConnectTimeout(ctx)
				return nil, nil, err
			}
		}
		var up *tunnel.Upstream
		var hc *upstream.Conn
		if h2 {
			up, err = c.openH2(ctx, cl, s)
		} else {
			up, hc, err = c.openH1(ctx, cl, s)
		}
		if err == nil {
			return up, hc, nil
		}
		if ctx.Err() != nil {
			c.countConnectTimeout(ctx)
			return nil, nil, err
		}
		if errors.Is(err, upstream.ErrNoHealthyUpstream) {
			return nil, nil, err // counted by the cluster
		}
	}
	c.attemptsExceeded(cl).Inc()
	return nil, nil, err
}

// refusedError is a tunnel response that did not establish the tunnel.
type refusedError struct {
	status int
	ended  bool // a success status whose stream ended with the headers
}

func (e *refusedError) Error() string {
	if e.ended {
		return fmt.Sprintf("tcp_proxy: tunnel response %d ended the stream", e.status)
	}
	return fmt.Sprintf("tcp_proxy: tunnel refused with status %d", e.status)
}

// openH2 opens one tunnel stream: exactly 200, without END_STREAM, is
// success. Streams share the cluster's HTTP/2 connections.
func (c *Config) openH2(ctx context.Context, cl *upstream.Cluster, s *session) (*tunnel.Upstream, error) {
	req := c.tunnel.newRequest(s)
	up, err := tunnel.OpenH2Connect(ctx, cl.RoundTrip, req, func(status int) bool { return status == http.StatusOK })
	if err != nil {
		return nil, err
	}
	s.noteResponse(c.tunnel, up.Response)
	// x/net reports a response whose HEADERS carried END_STREAM with a
	// Content-Length of 0.
	ended := up.Response.ContentLength == 0
	if !up.Accepted || ended {
		tunnel.Abort(up.Conn) // RST_STREAM, as Envoy's resetEncoder
		return nil, &refusedError{status: up.Response.StatusCode, ended: up.Accepted}
	}
	return up, nil
}

// openH1 opens one tunnel on a new connection of its own (never reused):
// any 2xx is success.
func (c *Config) openH1(ctx context.Context, cl *upstream.Cluster, s *session) (*tunnel.Upstream, *upstream.Conn, error) {
	conn, err := cl.Dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	conn.CountRequest()
	req := c.tunnel.newRequest(s)
	var up *tunnel.Upstream
	if c.tunnel.usePost {
		up, err = openH1Post(ctx, conn, req, c.tunnel.postPath)
	} else {
		up, err = tunnel.OpenH1Connect(ctx, conn, req)
	}
	if err != nil {
		conn.Close()
		return nil, nil, err
	}
	s.noteResponse(c.tunnel, up.Response)
	if !up.Accepted {
		conn.Close()
		return nil, nil, &refusedError{status: up.Response.StatusCode}
	}
	return up, conn, nil
}
